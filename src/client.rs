//! A Rust client for the supervisor's socket: what `pyclave run` uses, and a
//! reference for other callers. Many requests may be in flight; replies come
//! back in completion order, each with the id of its request.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use tokio::net::UnixStream;

use crate::channel::{self, ChannelError, FrameReader, FrameWriter};
use crate::proto::api::{Job, Outcome, Request, Response, outcome, response};

/// Responses carry outcomes with stdout, stderr and JSON; tables go by fd.
const MAX_RESPONSE_FRAME_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection")]
    Channel(#[from] ChannelError),
    #[error("the supervisor closed the connection")]
    Closed,
    #[error("the supervisor reported a protocol error: {0}")]
    Protocol(String),
    #[error("the supervisor sent a response without an outcome")]
    EmptyResponse,
}

/// One job's answer.
#[derive(Debug)]
pub struct Reply {
    pub id: u64,
    pub outcome: Outcome,
    /// The output table (a sealed, read-only Arrow IPC file) of an `ok` transform.
    pub table: Option<OwnedFd>,
}

pub struct Client {
    reader: FrameReader,
    writer: FrameWriter,
    next_id: u64,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let connect_error = |source| ClientError::Connect { path: path.display().to_string(), source };
        let stream = UnixStream::connect(path).await.map_err(connect_error)?;
        let (reader, writer) = stream
            .into_std()
            .and_then(|stream| channel::split(stream, MAX_RESPONSE_FRAME_BYTES))
            .map_err(connect_error)?;
        Ok(Self { reader, writer, next_id: 1 })
    }

    /// Sends `job` (with its input table, which sets `has_input_table`) and
    /// returns the request id its reply will carry.
    pub async fn submit(&mut self, mut job: Job, input: Option<BorrowedFd<'_>>) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        job.has_input_table = input.is_some();
        let fds: Vec<_> = input.into_iter().collect();
        self.writer.send(&Request { id, job: Some(job) }, &fds).await?;
        Ok(id)
    }

    /// The next reply, whichever job it answers.
    pub async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let response: Response = self.reader.recv().await?.ok_or(ClientError::Closed)?;
        match response.body {
            Some(response::Body::Outcome(outcome)) => {
                let has_table = matches!(&outcome.kind, Some(outcome::Kind::Ok(ok)) if ok.has_table);
                let table = if has_table { Some(self.reader.take_fd()?) } else { None };
                Ok(Reply { id: response.id, outcome, table })
            }
            Some(response::Body::ProtocolError(error)) => Err(ClientError::Protocol(error.message)),
            None => Err(ClientError::EmptyResponse),
        }
    }

    /// Runs one job and waits for its reply (other replies must not be pending).
    pub async fn run(&mut self, job: Job, input: Option<BorrowedFd<'_>>) -> Result<Reply, ClientError> {
        let id = self.submit(job, input).await?;
        loop {
            let reply = self.next_reply().await?;
            if reply.id == id {
                return Ok(reply);
            }
        }
    }
}
