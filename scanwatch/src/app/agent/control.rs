//! Answers the control socket's requests (block, unblock, blocks, status)
//! inside the agent's loop.

use std::time::Duration;

use super::steps::Agent;
use crate::{
    app::control::{Request, Response},
    model::{KernelClock, parse_target},
};

impl Agent {
    /// Answers one control request.
    pub(super) fn on_control(&mut self, req: Request) -> Response {
        let clock = KernelClock::now();
        match req {
            Request::Block {
                target,
                ttl_seconds,
                reason,
            } => {
                let reason = reason.as_deref().unwrap_or("manual");
                let blocked = parse_target(&target).and_then(|net| {
                    self.mitigation
                        .block(
                            net,
                            ttl_seconds.map(Duration::from_secs),
                            scanwatch_common::block_origin::MANUAL,
                            reason,
                        )
                        .map(|v| (net, v))
                        .map_err(|e| e.to_string())
                });
                match blocked {
                    Ok((net, v)) => {
                        log::info!("manual block of {net} ({reason})");
                        Response::ok(serde_json::json!({
                            "target": net.to_string(),
                            "expires": (v.expires_ns != 0).then(|| clock.rfc3339(v.expires_ns)),
                        }))
                    }
                    Err(e) => Response::err(e),
                }
            }
            Request::Unblock { target } => match parse_target(&target)
                .and_then(|net| self.mitigation.unblock(net).map_err(|e| e.to_string()))
            {
                Ok(()) => Response::ok(serde_json::json!({ "target": target })),
                Err(e) => Response::err(e),
            },
            Request::Blocks => {
                Response::ok(serde_json::to_value(self.mitigation.list(&clock)).unwrap_or_default())
            }
            Request::Status => Response::ok(self.status()),
        }
    }

    fn status(&self) -> serde_json::Value {
        let running = &self.running;
        let m = &self.mitigation;
        let cfg = m.config();
        let stats = self.engine.stats;
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "interfaces": running.attachments.iter().map(|a| serde_json::json!({
                "name": a.iface.name, "ifindex": a.iface.ifindex, "mode": a.mode.as_str(),
            })).collect::<Vec<_>>(),
            "pin_dir": running.pins.path().display().to_string(),
            "source_map_capacity": running.maps.source_capacity(),
            "detection": {
                "window_seconds": running.config.detection.window_seconds,
                "crossings": stats.events,
                "alerts": stats.alerts,
                "ignored": stats.ignored,
            },
            "mitigation": {
                "auto_block": cfg.auto_block,
                "dry_run": cfg.dry_run,
                "capacity": cfg.capacity,
                "never_block": m.never_block().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "stats": m.stats,
            },
            "feeds": m.feed_stats,
            "crowdsec": self.crowdsec_status(),
        })
    }

    /// `[crowdsec]` in `status`: null when off.
    fn crowdsec_status(&self) -> serde_json::Value {
        if self.bouncer.is_none() && self.machine.is_none() {
            return serde_json::Value::Null;
        }
        let cfg = &self.running.config.crowdsec;
        serde_json::json!({
            "lapi_url": cfg.lapi_url,
            "bouncer": self.bouncer.as_ref().map(|b| &b.stats),
            "machine": self.machine.as_ref().map(|m| m.counters.stats()),
        })
    }
}
