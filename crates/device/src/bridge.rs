//! The stdio bridge (test-only): one BLE connection at a time to the session driver
//! ([`GattServer`]), spoken as lines over a byte stream, so that a test in another language
//! (the web package's `npm test`) drives the real device engine without a radio. It is the
//! counterpart of the UA's in-memory link, through the same driver as the BlueZ backend.
//!
//! Lines, one message each:
//! - out first: `ready PORT` (the HTTPS port), then `info HEX` (the info characteristic's
//!   value for the bridge's ATT MTU);
//! - in: `subscribe` (status notifications on), `write HEX` (one control-point write, at
//!   most ATT MTU − 3 bytes, as over the air), `disconnect` (ends the session; the next
//!   `subscribe` or `write` is a new central's); end of input ends the bridge;
//! - out: `notify HEX` (one status notification).
//!
//! A line that is none of these, or longer than [`MAX_LINE`], ends the bridge with an error
//! naming the line: the peer is a test, and a test that speaks wrongly should fail loudly.

use std::sync::Arc;
use std::time::Instant;

use localcert_proto::gatt::{MAX_ATT_MTU, MAX_VALUE_LEN, MIN_ATT_MTU};
use localcert_proto::peripheral::{GattPeripheral, WriteRefused};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::gatt::{Connection, GattServer};

/// The longest input line, without its newline: `write ` and a hex value of the longest
/// characteristic value.
pub const MAX_LINE: usize = "write ".len() + 2 * MAX_VALUE_LEN;

/// The default ATT MTU of the bridge: a common phone's.
pub const DEFAULT_MTU: u16 = 185;

/// One input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The central enables status notifications.
    Subscribe,
    /// One control-point write.
    Write(Vec<u8>),
    /// The central disconnects.
    Disconnect,
}

/// Why the bridge stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The ATT MTU is outside 23..=517.
    #[error("ATT MTU {0} is outside {MIN_ATT_MTU}..={MAX_ATT_MTU}")]
    Mtu(u16),
    /// An input line is not part of the protocol.
    #[error("input line {line}: {reason}")]
    Input {
        /// The line number, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The session driver refused a write.
    #[error("input line {line}: write refused: {refused}")]
    Refused {
        /// The line number, from 1.
        line: u64,
        /// The refusal.
        refused: WriteRefused,
    },
    /// Reading input or writing output failed.
    #[error("bridge I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses one input line (without its newline) of a bridge at `att_mtu`.
pub fn parse_line(line: &str, att_mtu: u16) -> Result<Input, String> {
    let (command, argument) = match line.split_once(' ') {
        Some((command, argument)) => (command, Some(argument)),
        None => (line, None),
    };
    match (command, argument) {
        ("subscribe", None) => Ok(Input::Subscribe),
        ("disconnect", None) => Ok(Input::Disconnect),
        ("write", Some(hex)) => {
            let value = hex::decode(hex).map_err(|e| format!("write: not hex: {e}"))?;
            let max = usize::from(att_mtu) - 3;
            if value.len() > max {
                return Err(format!(
                    "write: {} bytes do not fit ATT MTU {att_mtu} (at most {max})",
                    value.len()
                ));
            }
            Ok(Input::Write(value))
        }
        ("write", None) => Err("write: missing the hex value".into()),
        ("subscribe" | "disconnect", Some(_)) => Err(format!("{command} takes no argument")),
        _ => Err(format!(
            "unknown command {command:?} (expected subscribe, write HEX or disconnect)"
        )),
    }
}

/// Reads lines, each with its number, into a channel; a line longer than [`MAX_LINE`] or not
/// UTF-8 is an error, and the reader stops there.
fn read_lines<R>(input: R) -> mpsc::Receiver<Result<(u64, String), BridgeError>>
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut input = input;
        let mut number = 0;
        loop {
            number += 1;
            let mut buf = Vec::new();
            // One byte past the limit (plus the newline) tells a long line from a full one.
            let limit = u64::try_from(MAX_LINE + 2).unwrap_or(u64::MAX);
            let read = tokio::io::AsyncReadExt::take(&mut input, limit)
                .read_until(b'\n', &mut buf)
                .await;
            let line = match read {
                Ok(0) => return,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    if buf.len() > MAX_LINE {
                        Err(BridgeError::Input {
                            line: number,
                            reason: format!("longer than {MAX_LINE} bytes"),
                        })
                    } else {
                        String::from_utf8(buf)
                            .map(|text| (number, text))
                            .map_err(|_| BridgeError::Input {
                                line: number,
                                reason: "not UTF-8".into(),
                            })
                    }
                }
                Err(e) => Err(BridgeError::Io(e)),
            };
            let stop = line.is_err();
            if tx.send(line).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Runs the bridge at `att_mtu` until `input` ends: announces `https_port` and the info
/// value, then feeds the input's commands to `server` and writes its notifications out.
pub async fn run<R, W>(
    server: Arc<GattServer<u64>>,
    att_mtu: u16,
    https_port: u16,
    input: R,
    mut output: W,
) -> Result<(), BridgeError>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    if !(MIN_ATT_MTU..=MAX_ATT_MTU).contains(&att_mtu) {
        return Err(BridgeError::Mtu(att_mtu));
    }
    let info = server.info(att_mtu);
    output
        .write_all(format!("ready {https_port}\ninfo {}\n", hex::encode(info)).as_bytes())
        .await?;
    output.flush().await?;
    let mut lines = read_lines(input);
    let mut changed = server.agent().outbox_changed();
    let mut connection: Option<Connection<u64>> = None;
    let mut centrals = 0u64;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let (number, text) = line?;
                let input = parse_line(&text, att_mtu)
                    .map_err(|reason| BridgeError::Input { line: number, reason })?;
                tracing::debug!(line = number, ?input, "bridge input");
                match input {
                    Input::Disconnect => connection = None,
                    Input::Subscribe | Input::Write(_) => {
                        let connection = connection.get_or_insert_with(|| {
                            centrals += 1;
                            server.connection(centrals)
                        });
                        match input {
                            Input::Write(value) => connection
                                .write(Instant::now(), att_mtu, &value)
                                .map_err(|refused| BridgeError::Refused { line: number, refused })?,
                            _ => connection.subscribe(),
                        }
                    }
                }
            }
            // The agent's timers (KEEPALIVE, user presence, timeouts) queued fragments.
            Ok(()) = changed.changed() => {}
        }
        if let Some(connection) = connection.as_mut() {
            let mut out = String::new();
            while let Some(fragment) = connection.poll_notification() {
                out.push_str("notify ");
                out.push_str(&hex::encode(fragment));
                out.push('\n');
            }
            if !out.is_empty() {
                output.write_all(out.as_bytes()).await?;
                output.flush().await?;
            }
        }
    }
    Ok(())
}
