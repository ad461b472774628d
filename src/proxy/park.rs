//! Idle sessions parked off the runtime.
//!
//! A proxied session waiting in a task costs memory: the task with its future (about 1 KB) and
//! one runtime registration per socket (an aligned 256-byte record each). The connections an
//! application's pool keeps open are idle most of the time, so the handler of a session that has
//! moved no bytes for `limits.park_idle_after` hands both sockets to the [`ParkingLot`] and ends.
//! The lot keeps them in one epoll set of its own, watched by one thread, together with the
//! little the session needs to go on. The first readable event on either socket (data, a close
//! or an error) gives the session back to a new task that carries on copying. Nothing is read
//! while a session is parked, so nothing can be lost or reordered.
//!
//! Every [`SWEEP_EVERY`] the thread also asks each parked session whether it must end (its
//! backend went down, the writer moved, the shutdown grace period is over, the idle timeout
//! passed) and closes those that must.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, warn};

/// How often the lot looks for parked sessions that must end.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A session that can wait in a [`ParkingLot`].
pub(crate) trait Session: Send + 'static {
    /// Why the session must end now, if it must; `parked_for` is how long it has been parked.
    fn must_end(&self, parked_for: Duration) -> Option<String>;
    /// Carries on with the session in a task: either socket has something to say.
    fn resume(self, client: TcpStream, backend: TcpStream);
    /// For the log line when the session ends while parked.
    fn describe(&self) -> String;
}

/// Parked sessions and the thread that watches them.
pub(crate) struct ParkingLot<S: Session> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    registry: mio::Registry,
    spaces: Mutex<Spaces<S>>,
}

struct Parked<S> {
    session: S,
    client: TcpStream,
    backend: TcpStream,
    since: Instant,
}

/// Parked sessions by token; a freed space is reused by the next session.
struct Spaces<S> {
    entries: Vec<Option<Parked<S>>>,
    free: Vec<usize>,
    count: usize,
}

impl<S> Drop for Spaces<S> {
    fn drop(&mut self) {
        crate::core::counters::metrics()
            .sessions_parked
            .sub(self.count as i64);
    }
}

impl<S> Spaces<S> {
    fn take(&mut self, index: usize) -> Option<Parked<S>> {
        let parked = self.entries.get_mut(index)?.take()?;
        self.free.push(index);
        self.count -= 1;
        crate::core::counters::metrics().sessions_parked.dec();
        Some(parked)
    }
}

impl<S: Session> ParkingLot<S> {
    /// Opens the epoll set and starts the watching thread, which ends once the lot is dropped.
    pub(crate) fn start() -> io::Result<ParkingLot<S>> {
        let poll = Poll::new()?;
        let inner = Arc::new(Inner {
            registry: poll.registry().try_clone()?,
            spaces: Mutex::new(Spaces {
                entries: Vec::new(),
                free: Vec::new(),
                count: 0,
            }),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("galera-lb-park".into())
            .spawn(move || watch(poll, weak))?;
        Ok(ParkingLot { inner })
    }

    /// Parks a session; on failure (the epoll set cannot take the sockets) gives everything back.
    #[allow(clippy::result_large_err)]
    pub(crate) fn park(
        &self,
        session: S,
        client: TcpStream,
        backend: TcpStream,
    ) -> Result<(), (S, TcpStream, TcpStream, io::Error)> {
        let mut spaces = self.inner.spaces.lock().unwrap_or_else(|e| e.into_inner());
        let index = spaces.free.pop().unwrap_or(spaces.entries.len());
        let registry = &self.inner.registry;
        let token = Token(index);
        let registered = registry
            .register(
                &mut SourceFd(&client.as_raw_fd()),
                token,
                Interest::READABLE,
            )
            .and_then(|()| {
                registry
                    .register(
                        &mut SourceFd(&backend.as_raw_fd()),
                        token,
                        Interest::READABLE,
                    )
                    .inspect_err(|_| {
                        let _ = registry.deregister(&mut SourceFd(&client.as_raw_fd()));
                    })
            });
        if let Err(e) = registered {
            if index < spaces.entries.len() {
                spaces.free.push(index);
            }
            return Err((session, client, backend, e));
        }
        let parked = Parked {
            session,
            client,
            backend,
            since: Instant::now(),
        };
        if index == spaces.entries.len() {
            spaces.entries.push(Some(parked));
        } else {
            spaces.entries[index] = Some(parked);
        }
        spaces.count += 1;
        crate::core::counters::metrics().sessions_parked.inc();
        Ok(())
    }

    /// Sessions parked now.
    pub(crate) fn len(&self) -> usize {
        self.inner
            .spaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count
    }
}

impl<S: Session> std::fmt::Debug for ParkingLot<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.len())
            .finish()
    }
}

/// The watching thread: resumes sessions whose sockets turn readable, ends those that must end.
fn watch<S: Session>(mut poll: Poll, lot: Weak<Inner<S>>) {
    let mut events = Events::with_capacity(1024);
    let mut last_sweep = Instant::now();
    loop {
        if let Err(e) = poll.poll(&mut events, Some(SWEEP_EVERY)) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!(error = %e, "waiting for parked sessions failed; trying again");
                std::thread::sleep(SWEEP_EVERY);
            }
            continue;
        }
        let Some(inner) = lot.upgrade() else {
            return;
        };
        let woken: Vec<Parked<S>> = {
            let mut spaces = inner.spaces.lock().unwrap_or_else(|e| e.into_inner());
            events
                .iter()
                .filter_map(|event| spaces.take(event.token().0))
                .collect()
        };
        for parked in woken {
            // The sockets' registrations end with this set; the task registers them anew.
            let _ = inner
                .registry
                .deregister(&mut SourceFd(&parked.client.as_raw_fd()));
            let _ = inner
                .registry
                .deregister(&mut SourceFd(&parked.backend.as_raw_fd()));
            parked.session.resume(parked.client, parked.backend);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            sweep(&inner);
        }
    }
}

/// Closes the parked sessions that must end (closing a socket also drops it from the set).
fn sweep<S: Session>(inner: &Inner<S>) {
    let ending: Vec<(Parked<S>, String)> = {
        let mut spaces = inner.spaces.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<(usize, String)> = spaces
            .entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                let parked = entry.as_ref()?;
                let reason = parked.session.must_end(parked.since.elapsed())?;
                Some((index, reason))
            })
            .collect();
        due.into_iter()
            .filter_map(|(index, reason)| Some((spaces.take(index)?, reason)))
            .collect()
    };
    for (parked, reason) in ending {
        debug!(session = %parked.session.describe(), "parked session ended: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    struct TestSession {
        resumed: mpsc::Sender<(TcpStream, TcpStream)>,
        end: Arc<AtomicBool>,
    }

    impl Session for TestSession {
        fn must_end(&self, _: Duration) -> Option<String> {
            self.end
                .load(Ordering::Relaxed)
                .then(|| "told to end".to_string())
        }
        fn resume(self, client: TcpStream, backend: TcpStream) {
            self.resumed.send((client, backend)).unwrap();
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    /// A connected pair of loopback sockets: (our end, the peer's end).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, theirs)
    }

    #[test]
    fn a_parked_session_resumes_when_either_side_speaks_and_nothing_is_read_for_it() {
        let lot = ParkingLot::start().unwrap();
        for speaker in ["client", "backend"] {
            let (client, mut client_peer) = pair();
            let (backend, mut backend_peer) = pair();
            let (tx, rx) = mpsc::channel();
            let session = TestSession {
                resumed: tx,
                end: Arc::new(AtomicBool::new(false)),
            };
            lot.park(session, client, backend).map_err(|e| e.3).unwrap();
            assert_eq!(lot.len(), 1);
            assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
            let peer = if speaker == "client" {
                &mut client_peer
            } else {
                &mut backend_peer
            };
            peer.write_all(b"hello").unwrap();
            let (mut client, mut backend) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(lot.len(), 0);
            let socket = if speaker == "client" {
                &mut client
            } else {
                &mut backend
            };
            socket.set_nonblocking(false).unwrap();
            let mut got = [0u8; 5];
            socket.read_exact(&mut got).unwrap();
            assert_eq!(
                &got, b"hello",
                "the bytes are still there for the resumed session"
            );
        }
    }

    #[test]
    fn a_closed_peer_resumes_the_session_and_a_session_that_must_end_is_closed() {
        let lot = ParkingLot::start().unwrap();
        let (client, client_peer) = pair();
        let (backend, _backend_peer) = pair();
        let (tx, rx) = mpsc::channel();
        let end = Arc::new(AtomicBool::new(false));
        let session = TestSession {
            resumed: tx.clone(),
            end: end.clone(),
        };
        lot.park(session, client, backend).map_err(|e| e.3).unwrap();
        drop(client_peer);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a close wakes the session");

        let (client, mut client_peer) = pair();
        let (backend, _backend_peer) = pair();
        let session = TestSession {
            resumed: tx,
            end: end.clone(),
        };
        lot.park(session, client, backend).map_err(|e| e.3).unwrap();
        end.store(true, Ordering::Relaxed);
        client_peer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            client_peer.read(&mut buf).unwrap(),
            0,
            "the sweep closes the session's sockets"
        );
        assert_eq!(lot.len(), 0);
        assert!(rx.try_recv().is_err(), "an ended session is not resumed");
    }
}
