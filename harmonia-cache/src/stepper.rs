//! A stream whose items are produced by blocking work (file reads, compression) on tokio's blocking
//! pool, one step ahead of the consumer.
//!
//! No thread is held while a slow client reads: each step is a separate short blocking task, and at
//! most one produced item waits for the client, so memory per response stays bounded.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use tokio::task::JoinHandle;

/// Blocking producer of body chunks.
pub trait Step: Send + 'static {
    /// Produces the next chunk; `None` ends the stream. Called again only after `Some(Ok(_))`.
    fn step(&mut self) -> Option<Result<Bytes, std::io::Error>>;
}

type Produced<W> = (Box<W>, Option<Result<Bytes, std::io::Error>>);

/// The stream driving a [`Step`] worker.
pub struct StepStream<W: Step> {
    idle: Option<Box<W>>,
    pending: Option<JoinHandle<Produced<W>>>,
}

impl<W: Step> StepStream<W> {
    /// Wraps `worker`; nothing runs before the first poll.
    pub fn new(worker: W) -> Self {
        StepStream {
            idle: Some(Box::new(worker)),
            pending: None,
        }
    }
}

fn spawn<W: Step>(mut worker: Box<W>) -> JoinHandle<Produced<W>> {
    tokio::task::spawn_blocking(move || {
        let item = worker.step();
        (worker, item)
    })
}

impl<W: Step> Stream for StepStream<W> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match this.idle.take() {
                Some(w) => this.pending = Some(spawn(w)),
                None => return Poll::Ready(None),
            }
        }
        let Some(handle) = this.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let result = ready!(Pin::new(handle).poll(cx));
        this.pending = None;
        match result {
            Err(e) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Ok((_, None)) => Poll::Ready(None),
            Ok((_, Some(Err(e)))) => Poll::Ready(Some(Err(e))),
            Ok((worker, Some(Ok(chunk)))) => {
                // Work on the next chunk while this one is being sent.
                this.pending = Some(spawn(worker));
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}
