//! Typed access to the web sampling's maps (`scanwatch_common::web`): the
//! `WEB_SAMPLES` ring (request samples and response status codes) and the
//! per-CPU `WEB_COUNTERS`, pinned for the metrics collector.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{Map, MapData, PerCpuArray, RingBuf},
};
use scanwatch_common::web::{
    WEB_COUNTERS_MAP, WEB_SAMPLE_BYTES, WEB_SAMPLES_MAP, WebCounters, WebHeader, WebRequestRecord,
    WebResponseRecord, record,
};

use super::{
    detect_maps::read_record,
    maps_error::{MapsError, map_err},
    pins::PinDir,
};
use crate::model::{Connection, WebEvent, error_chain};

/// One record of the web ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebRecord {
    /// A request's (or ClientHello's) first payload bytes.
    Request {
        head: WebHeader,
        /// The captured bytes (at most [`WEB_SAMPLE_BYTES`]).
        payload: Vec<u8>,
    },
    /// An HTTP/1.x response's status code.
    Response { head: WebHeader, status: u16 },
}

impl WebRecord {
    /// The event as the detection layer sees it (addresses unmapped).
    pub fn into_event(self) -> WebEvent {
        let conn = |h: &WebHeader| Connection {
            remote: SocketAddr::new(address(h.remote), h.remote_port),
            local: SocketAddr::new(address(h.local), h.local_port),
        };
        match self {
            Self::Request { head, payload } => WebEvent::Request {
                conn: conn(&head),
                time_ns: head.time_ns,
                segment_len: head.segment_len,
                payload,
            },
            Self::Response { head, status } => WebEvent::Response {
                conn: conn(&head),
                time_ns: head.time_ns,
                status,
            },
        }
    }
}

/// An address as the kernel writes it (IPv4-mapped for IPv4).
fn address(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Why a web ring record was not decoded (counted by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebDecodeError {
    #[error("record of {0} bytes is shorter than its kind's layout")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("status code {0} out of range")]
    Status(u32),
}

/// A `T` from the start of the record, or why not.
fn read<T: aya::Pod>(bytes: &[u8]) -> Result<T, WebDecodeError> {
    read_record(bytes).ok_or(WebDecodeError::Short(bytes.len()))
}

/// Decodes one record of the web ring.
pub fn decode_web(bytes: &[u8]) -> Result<WebRecord, WebDecodeError> {
    let head: WebHeader = read(bytes)?;
    match head.kind {
        record::REQUEST => {
            let r: WebRequestRecord = read(bytes)?;
            let captured = (r.captured as usize).min(WEB_SAMPLE_BYTES);
            Ok(WebRecord::Request {
                head,
                payload: r.bytes[..captured].to_vec(),
            })
        }
        record::RESPONSE => {
            let r: WebResponseRecord = read(bytes)?;
            match u16::try_from(r.status) {
                Ok(status) if (100..=999).contains(&status) => {
                    Ok(WebRecord::Response { head, status })
                }
                _ => Err(WebDecodeError::Status(r.status)),
            }
        }
        kind => Err(WebDecodeError::Kind(kind)),
    }
}

/// The web ring of a loaded object (not pinned: only the agent reads it).
pub fn take_web_samples(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, MapsError> {
    let map = ebpf
        .take_map(WEB_SAMPLES_MAP)
        .ok_or(MapsError::Missing(WEB_SAMPLES_MAP))?;
    RingBuf::try_from(map).map_err(map_err(WEB_SAMPLES_MAP))
}

/// The kernel's web sampling counters.
pub struct WebCountersMap {
    map: PerCpuArray<MapData, WebCounters>,
}

impl WebCountersMap {
    /// Takes the counters out of a loaded object and pins them in `pins`.
    pub fn take_and_pin(ebpf: &mut Ebpf, pins: &PinDir) -> Result<Self, MapsError> {
        let map = ebpf
            .take_map(WEB_COUNTERS_MAP)
            .ok_or(MapsError::Missing(WEB_COUNTERS_MAP))?;
        map.pin(pins.pin_path(WEB_COUNTERS_MAP))
            .map_err(|e| MapsError::Map {
                name: WEB_COUNTERS_MAP,
                detail: format!("cannot pin: {}", error_chain(&e)),
            })?;
        Self::of(map)
    }

    /// Takes the counters out of a loaded object without pinning (tests).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let map = ebpf
            .take_map(WEB_COUNTERS_MAP)
            .ok_or(MapsError::Missing(WEB_COUNTERS_MAP))?;
        Self::of(map)
    }

    /// The counters a running agent pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        let path = super::pins::existing_pin(dir, WEB_COUNTERS_MAP)?;
        let data = MapData::from_pin(&path).map_err(map_err(WEB_COUNTERS_MAP))?;
        Self::of(Map::from_map_data(data).map_err(map_err(WEB_COUNTERS_MAP))?)
    }

    fn of(map: Map) -> Result<Self, MapsError> {
        Ok(Self {
            map: PerCpuArray::try_from(map).map_err(map_err(WEB_COUNTERS_MAP))?,
        })
    }

    /// The counters summed over CPUs.
    pub fn read(&self) -> Result<WebCounters, MapsError> {
        let per_cpu = self.map.get(&0, 0).map_err(map_err(WEB_COUNTERS_MAP))?;
        let mut sum = WebCounters::default();
        for cpu in per_cpu.iter() {
            for (a, b) in sum.counters.iter_mut().zip(cpu.counters) {
                *a = a.wrapping_add(b);
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use scanwatch_common::SourceKey;

    use super::*;

    fn head(kind: u32) -> WebHeader {
        WebHeader {
            kind,
            ifindex: 3,
            time_ns: 7,
            remote: [1; 16],
            local: [2; 16],
            remote_port: 40000,
            local_port: 80,
            segment_len: 18,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: the record types have no padding (assert_layout!).
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn requests_keep_only_their_captured_bytes() {
        let mut r = WebRequestRecord {
            head: head(record::REQUEST),
            captured: 18,
            _pad: 0,
            bytes: [0; WEB_SAMPLE_BYTES],
        };
        r.bytes[..18].copy_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let decoded = decode_web(&bytes_of(&r)).expect("decodes");
        assert_eq!(
            decoded,
            WebRecord::Request {
                head: head(record::REQUEST),
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            }
        );
        r.captured = 100_000;
        let WebRecord::Request { payload, .. } = decode_web(&bytes_of(&r)).expect("decodes") else {
            panic!("not a request");
        };
        assert_eq!(payload.len(), WEB_SAMPLE_BYTES);
    }

    #[test]
    fn events_carry_unmapped_addresses() {
        let mut h = head(record::RESPONSE);
        h.remote = SourceKey::v4([198, 18, 0, 1]).addr;
        h.local = "fd00::2".parse::<Ipv6Addr>().expect("v6").octets();
        let event = WebRecord::Response {
            head: h,
            status: 404,
        }
        .into_event();
        assert_eq!(
            event.conn().remote,
            "198.18.0.1:40000".parse().expect("addr")
        );
        assert_eq!(event.conn().local, "[fd00::2]:80".parse().expect("addr"));
    }

    #[test]
    fn responses_short_and_unknown_records() {
        let r = WebResponseRecord {
            head: head(record::RESPONSE),
            status: 404,
            _pad: 0,
        };
        assert_eq!(
            decode_web(&bytes_of(&r)),
            Ok(WebRecord::Response {
                head: head(record::RESPONSE),
                status: 404
            })
        );
        let bad = WebResponseRecord {
            status: 70_000,
            ..r
        };
        assert_eq!(
            decode_web(&bytes_of(&bad)),
            Err(WebDecodeError::Status(70_000))
        );
        assert_eq!(decode_web(&[0; 10]), Err(WebDecodeError::Short(10)));
        let short_request = bytes_of(&head(record::REQUEST));
        assert_eq!(decode_web(&short_request), Err(WebDecodeError::Short(56)));
        assert_eq!(
            decode_web(&bytes_of(&head(9))),
            Err(WebDecodeError::Kind(9))
        );
    }
}
