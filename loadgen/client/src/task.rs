//! A connection's task: its HTTP/2 connections (the one now, and any that ended with a GOAWAY
//! and still finish their calls) and the tasks run beside them (the callers of the connection:
//! see `Conn::beside`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::conn::Link;
use crate::dial::Connection;

/// Work run on a connection's own task.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An HTTP/2 connection's own future (its reading and writing), ending with the connection; it
/// resolves to the connection's generation.
pub(crate) type Driver = Pin<Box<dyn Future<Output = u64> + Send>>;

/// What a connection's task is asked to do.
pub(crate) enum Order {
    /// Run this beside the connection.
    Run(Task),
    /// Drop everything it runs (abandoning their calls).
    StopAll,
    /// Drive this connection too: the one that replaces a connection that ended.
    Connection(Driver),
}

/// `connection`'s future, resolving to its `generation`.
pub(crate) fn drives(connection: Connection, generation: u64) -> Driver {
    Box::pin(async move {
        connection.await;
        generation
    })
}

/// The connection's task: its HTTP/2 connections (the one now, and any that ended with a
/// GOAWAY and still finish their calls) and the tasks run beside them.
///
/// Each turn runs the tasks that were woken first and the connections last, so whatever
/// requests the tasks started in this turn leave in one write.
pub(crate) async fn drive(
    first: Driver,
    mut inbox: mpsc::UnboundedReceiver<Order>,
    link: Arc<Link>,
) {
    let mut tasks = FuturesUnordered::new();
    // The connection now, polled directly (it is woken by every socket read), and those that
    // ended with a GOAWAY and still finish their calls.
    let mut current = Some(first);
    let mut draining = FuturesUnordered::new();
    let mut inbox_open = true;
    std::future::poll_fn(|cx| {
        while inbox_open {
            match inbox.poll_recv(cx) {
                Poll::Ready(Some(Order::Run(task))) => tasks.push(task),
                Poll::Ready(Some(Order::StopAll)) => tasks.clear(),
                Poll::Ready(Some(Order::Connection(c))) => {
                    if let Some(old) = current.replace(c) {
                        draining.push(old);
                    }
                }
                Poll::Ready(None) => inbox_open = false,
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
        let mut ended = false;
        if let Some(Poll::Ready(generation)) = current.as_mut().map(|c| c.as_mut().poll(cx)) {
            // Closed or broken: its streams have been told, and the tasks see that as errors
            // of their calls; the next call opens another connection (unless one replaced it
            // already).
            if generation == link.generation.load(Relaxed) {
                link.closed.store(true, Relaxed);
            }
            current = None;
            ended = true;
        }
        while let Poll::Ready(Some(_)) = draining.poll_next_unpin(cx) {
            ended = true;
        }
        if ended {
            while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
        }
        if current.is_none() && draining.is_empty() && !inbox_open && tasks.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
