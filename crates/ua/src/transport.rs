//! The central side of the protocol: one request at a time over a [`BleLink`], with framing,
//! keep-alives, the response timeout and cancel, as SPEC.md §3 says.

use localcert_proto::ErrorCode;
use localcert_proto::frame::{Command, Frame, KeepAliveStatus, RESPONSE_TIMEOUT, Reassembler};
use localcert_proto::gatt::{GattInfo, MIN_FRAGMENT_LEN, fragment_len};
use localcert_proto::message::{Request, Response};
use localcert_proto::{DecodeError, FrameError};

use crate::link::{BleLink, LinkError};

/// Why a request over BLE failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The link failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The device's info characteristic is not valid.
    #[error("device info characteristic: {0}")]
    Info(DecodeError),
    /// The device speaks another protocol revision.
    #[error(
        "device speaks protocol revision {0}, this UA speaks {ours}",
        ours = localcert_proto::gatt::PROTOCOL_REVISION
    )]
    Revision(u64),
    /// The device's notifications break the framing rules.
    #[error("device framing: {0}")]
    Framing(#[from] FrameError),
    /// The device's response does not decode.
    #[error("device response: {0}")]
    Decode(#[from] DecodeError),
    /// The device reported a framing error for our request.
    #[error("device refused the frame: {0}")]
    Refused(ErrorCode),
    /// The device sent something that is not a response (e.g. an unknown error byte).
    #[error("device sent an unexpected {0:?} frame")]
    Unexpected(Command),
    /// Neither a response nor a keep-alive arrived in time; the request was cancelled.
    #[error("device did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// A connected session with a device.
#[derive(Debug)]
pub struct Transport<L> {
    link: L,
    info: GattInfo,
    fragment_len: usize,
    reassembler: Reassembler,
    exchanges: u64,
}

impl<L: BleLink> Transport<L> {
    /// Opens the session with its first request pipelined: one that fits in a single fragment
    /// of the smallest size (GET_INFO, LIST) is written before the info characteristic is read,
    /// so the read and the request share connection events instead of taking a turn each
    /// (SPEC §2.1). Then reads info as [`Transport::open`] does, and waits for the answer.
    pub async fn open_with(
        mut link: L,
        request: &Request,
        on_keep_alive: impl FnMut(KeepAliveStatus) + Send,
    ) -> Result<(Self, Response), TransportError> {
        let frame = Frame::msg(request.encode());
        let fragments: Vec<Vec<u8>> = frame.fragments(MIN_FRAGMENT_LEN)?.collect();
        let early = fragments.len() == 1;
        if early {
            for fragment in &fragments {
                link.write(fragment).await?;
            }
        }
        let mut transport = Self::open(link).await?;
        if !early {
            transport.send(&frame).await?;
        }
        let response = transport.receive(request, on_keep_alive).await?;
        Ok((transport, response))
    }

    /// Reads the info characteristic and settles the fragment size.
    pub async fn open(mut link: L) -> Result<Self, TransportError> {
        let info = GattInfo::decode(&link.read_info().await?).map_err(TransportError::Info)?;
        if info.revision != localcert_proto::gatt::PROTOCOL_REVISION {
            return Err(TransportError::Revision(info.revision));
        }
        let ours = fragment_len(link.att_mtu());
        let fragment_len = ours.min(usize::try_from(info.max_fragment_len).unwrap_or(ours));
        Ok(Self {
            link,
            info,
            fragment_len,
            reassembler: Reassembler::new(),
            exchanges: 0,
        })
    }

    /// The device's info characteristic.
    pub fn info(&self) -> &GattInfo {
        &self.info
    }

    /// The fragment size in use.
    pub fn fragment_len(&self) -> usize {
        self.fragment_len
    }

    /// Request/response exchanges completed.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// The link.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The link, mutably.
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Gives the link back.
    pub fn into_link(self) -> L {
        self.link
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        for fragment in frame.fragments(self.fragment_len)? {
            self.link.write(&fragment).await?;
        }
        Ok(())
    }

    /// Sends a request and waits for its response. `on_keep_alive` is called for each
    /// KEEPALIVE, e.g. to tell the user to press the device's button.
    pub async fn request(
        &mut self,
        request: &Request,
        on_keep_alive: impl FnMut(KeepAliveStatus) + Send,
    ) -> Result<Response, TransportError> {
        self.reassembler.reset();
        self.send(&Frame::msg(request.encode())).await?;
        self.receive(request, on_keep_alive).await
    }

    /// Waits for the answer to `request`, already sent.
    async fn receive(
        &mut self,
        request: &Request,
        mut on_keep_alive: impl FnMut(KeepAliveStatus) + Send,
    ) -> Result<Response, TransportError> {
        loop {
            let Some(fragment) = self.link.notification(RESPONSE_TIMEOUT).await? else {
                // Best effort: the device may be gone already.
                let _ = self.send(&Frame::cancel()).await;
                return Err(TransportError::Timeout(RESPONSE_TIMEOUT));
            };
            let out_of_order = self.reassembler.out_of_order();
            let frame = self.reassembler.handle_fragment(self.link.now(), &fragment);
            if self.reassembler.out_of_order() > out_of_order {
                // Several ATT bearers (EATT) reorder notifications; the framing puts them back.
                tracing::debug!("notification arrived out of order, held");
            }
            let Some(frame) = frame? else {
                continue;
            };
            match frame.cmd {
                Command::Msg => {
                    self.exchanges += 1;
                    return Ok(Response::decode(request.operation(), &frame.data)?);
                }
                Command::KeepAlive => {
                    if let Some(status) = frame
                        .data
                        .first()
                        .copied()
                        .and_then(KeepAliveStatus::from_u8)
                    {
                        on_keep_alive(status);
                    }
                }
                Command::Error => {
                    let code = frame.data.first().copied().and_then(ErrorCode::from_u8);
                    return Err(code.map_or(
                        TransportError::Unexpected(Command::Error),
                        TransportError::Refused,
                    ));
                }
                other => return Err(TransportError::Unexpected(other)),
            }
        }
    }

    /// Ends the connection.
    pub async fn close(mut self) {
        self.link.disconnect().await;
    }
}
