//! The control channel during a transfer: a thread reads frames and hands them over a channel
//! (so the data loop never blocks on it); frames are written directly by the data loop.

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

use super::{Control, TransferError};
use crate::protocol::frame::write_frame;
use crate::protocol::reader::read_frame;
use crate::protocol::Frame;

/// What the reader thread reports.
#[derive(Debug)]
pub enum Event {
    /// A frame arrived.
    Frame(Frame),
    /// The stream ended cleanly between frames.
    Closed,
    /// The stream failed or carried a bad frame.
    Failed(String),
}

/// Both directions of the control channel, as the engine uses them.
pub struct Channel {
    events: Receiver<Event>,
    writer: Box<dyn Write + Send>,
    ended: bool,
}

impl Channel {
    /// Starts the reader thread. The thread ends when the stream ends (it cannot be
    /// interrupted while blocked in a read: the caller closes the stream after the session).
    pub fn start(control: Control) -> Result<Channel, TransferError> {
        let (tx, rx) = mpsc::channel();
        let mut reader: Box<dyn Read + Send> = control.reader;
        thread::Builder::new()
            .name("ascp-control".into())
            .spawn(move || loop {
                let ev = match read_frame(&mut reader) {
                    Ok(Some(f)) => Event::Frame(f),
                    Ok(None) => Event::Closed,
                    Err(e) => Event::Failed(e.to_string()),
                };
                let last = !matches!(ev, Event::Frame(_));
                if tx.send(ev).is_err() || last {
                    return;
                }
            })
            .map_err(|e| TransferError::io("starting the control reader thread", e))?;
        Ok(Channel {
            events: rx,
            writer: control.writer,
            ended: false,
        })
    }

    /// The next frame if one is waiting. A closed or failed channel is an error.
    pub fn try_next(&mut self) -> Result<Option<Frame>, TransferError> {
        if self.ended {
            return Err(TransferError::ControlClosed);
        }
        match self.events.try_recv() {
            Ok(Event::Frame(f)) => Ok(Some(f)),
            Ok(Event::Closed) | Err(TryRecvError::Disconnected) => {
                self.ended = true;
                Err(TransferError::ControlClosed)
            }
            Ok(Event::Failed(msg)) => {
                self.ended = true;
                Err(TransferError::Protocol(format!("control channel: {msg}")))
            }
            Err(TryRecvError::Empty) => Ok(None),
        }
    }

    /// Sends a frame.
    pub fn send(&mut self, frame: &Frame) -> Result<(), TransferError> {
        write_frame(&mut self.writer, frame).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) {
                TransferError::ControlClosed
            } else {
                TransferError::io("writing to the control channel", e)
            }
        })
    }
}
