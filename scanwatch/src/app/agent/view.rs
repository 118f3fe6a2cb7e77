//! The kernel state of a source as the detection engine reads it.

use scanwatch_common::{SourceKey, SourceStats};

use crate::{
    detect::{ReplyEvidence, SourceView},
    kernel::{detect_maps::ScanwatchMaps, reply_maps::ReplyMaps},
};

/// The source map, and the reply-aware test's maps when it is enabled.
pub(super) struct KernelView<'a> {
    pub maps: &'a ScanwatchMaps,
    pub reply: Option<&'a ReplyMaps>,
}

impl SourceView for KernelView<'_> {
    fn stats(&self, key: &SourceKey) -> Option<SourceStats> {
        self.maps.source(key)
    }

    fn reply(&self, key: &SourceKey) -> ReplyEvidence {
        let Some(reply) = self.reply else {
            return ReplyEvidence::default();
        };
        match reply.stats(key) {
            Ok(Some(s)) => ReplyEvidence::from_stats(&s, reply.config()),
            Ok(None) => ReplyEvidence::default(),
            Err(e) => {
                log::warn!("cannot read the reply state of {}: {e}", key.ip());
                ReplyEvidence::default()
            }
        }
    }
}
