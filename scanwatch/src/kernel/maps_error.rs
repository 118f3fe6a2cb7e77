//! The error of the maps' typed access (detect, sources), below every
//! module that reads a map.

use aya::maps::MapError;

use super::pins::PinDirError;
use crate::model::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} missing from the object")]
    Missing(&'static str),
    #[error("map {name}: {detail}")]
    Map { name: &'static str, detail: String },
    #[error(transparent)]
    Pins(#[from] PinDirError),
}

/// Wraps an aya map error with the map's name.
pub(super) fn map_err(name: &'static str) -> impl Fn(MapError) -> MapsError {
    move |e| MapsError::Map {
        name,
        detail: error_chain(&e),
    }
}
