//! Length-prefixed protobuf frames with file descriptors over Unix stream sockets.
//!
//! Every wire of pyclave uses this: callers, the zygote and workers. A frame
//! is a 4-byte big-endian length and one protobuf message (the length is
//! checked against the limit before anything is allocated). Fds ride as
//! SCM_RIGHTS with the first byte of the frame that announces them; the reader
//! queues them in arrival order and the decoded message says how many to take.
//!
//! A socket is registered with the reactor for reading only. Frames are small
//! next to a socket's buffer, so a write almost never waits; registered for
//! writing too, every read the peer does would wake this process for nothing
//! (an edge-triggered `EPOLLOUT` per frame sent). The rare write that does
//! wait registers a duplicate of the fd for writability until its frame is out.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use bytes::BytesMut;
use nix::cmsg_space;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Most fds a single frame of any pyclave protocol carries.
pub const MAX_FDS_PER_FRAME: usize = 8;
/// Fds received but not yet claimed by a frame; more means a misbehaving peer.
const MAX_QUEUED_FDS: usize = 16;
const HEADER_BYTES: usize = 4;
const READ_CHUNK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where reads land before their bytes are appended where they belong.
    /// Every reader copies them out before it could read again, so one per
    /// thread serves them all: a buffer per reader was allocated and zeroed
    /// for every worker (three per job).
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK_BYTES].into_boxed_slice());
}

/// Runs `read` with this thread's read buffer (not re-entrant: `read` must
/// not call this again).
pub(crate) fn with_read_scratch<R>(read: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_SCRATCH.with_borrow_mut(|scratch| read(scratch))
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("i/o on the socket")]
    Io(#[from] io::Error),
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("frame is not a valid protobuf message")]
    Decode(#[from] prost::DecodeError),
    #[error("a frame announced a file descriptor that did not arrive")]
    MissingFd,
    #[error("more than {limit} file descriptors arrived without a frame claiming them")]
    TooManyFds { limit: usize },
    #[error("{count} file descriptors arrived from a peer that may send none")]
    FdsRefused { count: usize },
    #[error("the peer closed the connection in the middle of a frame")]
    TruncatedFrame,
}

/// Splits a Unix stream into a frame reader and a frame writer (the stream
/// is made non-blocking and registered with the current runtime).
pub fn split(stream: UnixStream, max_frame_bytes: usize) -> io::Result<(FrameReader, FrameWriter)> {
    stream.set_nonblocking(true)?;
    let stream = Arc::new(register(stream, Interest::READABLE)?);
    let reader = FrameReader {
        stream: Arc::clone(&stream),
        codec: LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_length(HEADER_BYTES)
            .max_frame_length(max_frame_bytes)
            .new_codec(),
        max_frame_bytes,
        buffer: BytesMut::new(),
        fds: VecDeque::new(),
        keeps_fds: true,
        sender_pid: None,
    };
    Ok((reader, FrameWriter { stream }))
}

pub struct FrameReader {
    stream: Arc<AsyncFd<UnixStream>>,
    codec: LengthDelimitedCodec,
    max_frame_bytes: usize,
    buffer: BytesMut,
    fds: VecDeque<OwnedFd>,
    keeps_fds: bool,
    /// The pid of the process that sent the bytes read last, when the
    /// socket passes credentials.
    sender_pid: Option<i32>,
}

impl FrameReader {
    /// The next message, or `None` when the peer closed between frames.
    pub async fn recv<M: prost::Message + Default>(&mut self) -> Result<Option<M>, ChannelError> {
        loop {
            if let Some(frame) = self.next_buffered_frame()? {
                return Ok(Some(M::decode(frame)?));
            }
            if self.fill().await? == 0 {
                return if self.buffer.is_empty() { Ok(None) } else { Err(ChannelError::TruncatedFrame) };
            }
        }
    }

    /// For a peer that may send no fds (a worker): any it passes anyway
    /// are closed on arrival (nothing of it outlives it here) and the read
    /// fails with [`ChannelError::FdsRefused`].
    pub fn refuse_fds(&mut self) {
        self.keeps_fds = false;
    }

    /// Who sent the bytes read last, when they came with credentials (see
    /// [`pass_credentials`]).
    pub fn sender_pid(&self) -> Option<i32> {
        self.sender_pid
    }

    /// The next fd received, in arrival order.
    pub fn take_fd(&mut self) -> Result<OwnedFd, ChannelError> {
        self.fds.pop_front().ok_or(ChannelError::MissingFd)
    }

    /// Every fd received and not taken yet, in arrival order.
    pub fn take_all_fds(&mut self) -> Vec<OwnedFd> {
        self.fds.drain(..).collect()
    }

    fn next_buffered_frame(&mut self) -> Result<Option<BytesMut>, ChannelError> {
        self.codec.decode(&mut self.buffer).map_err(|error| {
            if error.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
                // The codec refused the header before consuming it: name the size.
                let header = self.buffer[..HEADER_BYTES].try_into().expect("the header was read");
                ChannelError::FrameTooLarge { size: u32::from_be_bytes(header) as usize, limit: self.max_frame_bytes }
            } else {
                ChannelError::Io(error)
            }
        })
    }

    /// Reads one chunk (and any fds with it); returns the bytes read.
    async fn fill(&mut self) -> Result<usize, ChannelError> {
        let buffer = &mut self.buffer;
        let Received { bytes: read, fds, sender_pid } = loop {
            let mut ready = self.stream.readable().await?;
            let attempt = with_read_scratch(|scratch| {
                ready.try_io(|stream| {
                    let received = receive(stream.as_raw_fd(), scratch)?;
                    buffer.extend_from_slice(&scratch[..received.bytes]);
                    Ok(received)
                })
            });
            match attempt {
                Ok(received) => break received?,
                Err(_would_block) => continue,
            }
        };
        if sender_pid.is_some() {
            self.sender_pid = sender_pid;
        }
        if !self.keeps_fds && !fds.is_empty() {
            return Err(ChannelError::FdsRefused { count: fds.len() });
        }
        self.fds.extend(fds);
        if self.fds.len() > MAX_QUEUED_FDS {
            return Err(ChannelError::TooManyFds { limit: MAX_QUEUED_FDS });
        }
        Ok(read)
    }
}

/// What one `recvmsg` brought.
struct Received {
    bytes: usize,
    fds: Vec<OwnedFd>,
    sender_pid: Option<i32>,
}

fn receive(socket: RawFd, chunk: &mut [u8]) -> io::Result<Received> {
    let mut ancillary = cmsg_space!([RawFd; MAX_FDS_PER_FRAME], libc::ucred);
    let mut iov = [IoSliceMut::new(chunk)];
    let message = recvmsg::<()>(socket, &mut iov, Some(&mut ancillary), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    let mut sender_pid = None;
    for cmsg in message.cmsgs()? {
        match cmsg {
            ControlMessageOwned::ScmRights(raw_fds) => {
                // SAFETY: the kernel has just installed these descriptors in
                // our table for this message; nothing else knows or owns them.
                fds.extend(raw_fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            ControlMessageOwned::ScmCredentials(credentials) => sender_pid = Some(credentials.pid()),
            _ => {}
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_FDS_PER_FRAME} file descriptors in one message"),
        ));
    }
    Ok(Received { bytes: message.bytes, fds, sender_pid })
}

/// Writes whole frames. Frames never interleave: a writer has one owner.
pub struct FrameWriter {
    stream: Arc<AsyncFd<UnixStream>>,
}

impl FrameWriter {
    pub async fn send<M: prost::Message>(&mut self, message: &M, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let frame = encode_frame(message);
        let raw_fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let socket = self.stream.get_ref().as_raw_fd();
        // Registered for writability only once a write would block.
        let mut full: Option<AsyncFd<UnixStream>> = None;
        let mut sent = 0;
        while sent < frame.len() {
            // Fds go with the frame's first byte only.
            let attach: &[RawFd] = if sent == 0 { &raw_fds } else { &[] };
            let send = || send_with_fds(socket, &frame[sent..], attach);
            let written = match &full {
                None => send(),
                Some(full) => match full.writable().await?.try_io(|_| send()) {
                    Ok(written) => written,
                    Err(_would_block) => continue,
                },
            };
            match written {
                Ok(written) => sent += written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && full.is_none() => {
                    let duplicate = self.stream.get_ref().try_clone()?;
                    full = Some(register(duplicate, Interest::WRITABLE)?);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// Has the kernel attach the sender's credentials to whatever is sent to
/// `socket` from now on: [`FrameReader::sender_pid`] then says who sent a
/// frame, as a pid of this process's pid namespace.
pub fn pass_credentials(socket: &UnixStream) -> io::Result<()> {
    Ok(nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::PassCred, &true)?)
}

/// Registers `stream` with the current runtime's reactor for `interest`.
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns `stream`, whose `as_raw_fd` is the same open
    // descriptor for as long as it lives (nothing here closes or replaces it).
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    Ok(sendmsg::<()>(socket, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?)
}

/// Encodes `message` as one frame: length header, then the message.
pub fn encode_frame<M: prost::Message>(message: &M) -> BytesMut {
    let length = message.encoded_len();
    let mut frame = BytesMut::with_capacity(HEADER_BYTES + length);
    frame.extend_from_slice(&u32::try_from(length).expect("messages are far below 4 GiB").to_be_bytes());
    message.encode(&mut frame).expect("capacity reserved above");
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use crate::proto::api::{Job, Request};

    fn pair(max_frame_bytes: usize) -> ((FrameReader, FrameWriter), (FrameReader, FrameWriter)) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (split(a, max_frame_bytes).expect("split"), split(b, max_frame_bytes).expect("split"))
    }

    fn request(id: u64, code: &str) -> Request {
        Request {
            id,
            job: Some(Job { code: Some(crate::proto::api::job::Code::InlineCode(code.into())), ..Job::default() }),
        }
    }

    #[tokio::test]
    async fn frames_and_fds_arrive_in_order() {
        let ((_, mut writer), (mut reader, _)) = pair(1 << 20);
        let file = tempfile::tempfile().expect("tempfile");
        writer.send(&request(1, "a"), &[]).await.expect("send");
        writer.send(&request(2, "b"), &[file.as_fd()]).await.expect("send");
        writer.send(&request(3, &"c".repeat(200_000)), &[]).await.expect("send");
        let first: Request = reader.recv().await.expect("recv").expect("frame");
        assert_eq!(first.id, 1);
        let second: Request = reader.recv().await.expect("recv").expect("frame");
        assert_eq!(second.id, 2);
        let fd = reader.take_fd().expect("fd arrived with frame 2");
        assert!(nix::sys::stat::fstat(&fd).is_ok());
        let third: Request = reader.recv().await.expect("recv").expect("frame");
        assert_eq!(third, request(3, &"c".repeat(200_000)));
        assert!(matches!(reader.take_fd(), Err(ChannelError::MissingFd)));
    }

    #[tokio::test]
    async fn a_reader_that_refuses_fds_closes_them_on_arrival() {
        let ((_, mut writer), (mut reader, _)) = pair(1 << 20);
        reader.refuse_fds();
        let (kept, passed) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        writer.send(&request(1, "a"), &[passed.as_fd()]).await.expect("send");
        drop(passed);
        assert!(matches!(reader.recv::<Request>().await, Err(ChannelError::FdsRefused { count: 1 })));
        // The only other end was the one passed: it is closed.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &kept, &mut byte).expect("read"), 0, "EOF: the passed end is closed");
    }

    #[tokio::test]
    async fn a_reader_passing_credentials_knows_the_sender() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        pass_credentials(&b).expect("SO_PASSCRED");
        let ((_, mut writer), (mut reader, _)) = (split(a, 1024).expect("split"), split(b, 1024).expect("split"));
        assert_eq!(reader.sender_pid(), None);
        writer.send(&request(1, "a"), &[]).await.expect("send");
        reader.recv::<Request>().await.expect("recv").expect("frame");
        assert_eq!(reader.sender_pid(), Some(std::process::id() as i32));
    }

    #[tokio::test]
    async fn oversized_length_is_rejected_before_the_body_arrives() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let (mut reader, _) = split(b, 1024).expect("split");
        // Only the header is sent: the reader must refuse without waiting for 1 GiB.
        std::io::Write::write_all(&mut a, &(1u32 << 30).to_be_bytes()).expect("write");
        match reader.recv::<Request>().await {
            Err(ChannelError::FrameTooLarge { size, limit }) => assert_eq!((size, limit), (1 << 30, 1024)),
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error_and_clean_close_is_none() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let (mut reader, _) = split(b, 1024).expect("split");
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 5]);
        std::io::Write::write_all(&mut a, &garbage).expect("write");
        assert!(matches!(reader.recv::<Request>().await, Err(ChannelError::Decode(_))));

        let (a, b) = UnixStream::pair().expect("socketpair");
        let (mut reader, _) = split(b, 1024).expect("split");
        drop(a);
        assert!(matches!(reader.recv::<Request>().await, Ok(None)));
    }

    #[tokio::test]
    async fn close_mid_frame_is_truncation() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let (mut reader, _) = split(b, 1024).expect("split");
        std::io::Write::write_all(&mut a, &[0, 0, 0, 10, 1, 2]).expect("write");
        drop(a);
        assert!(matches!(reader.recv::<Request>().await, Err(ChannelError::TruncatedFrame)));
    }
}
