//! Listening sockets and the one accept loop that every port uses: the proxy's listeners, the
//! control port and the admin port.
//!
//! [`bind`] opens a socket with SO_REUSEADDR, optional SO_REUSEPORT and a backlog, and turns
//! "address in use" into a message that says who holds the port, and "permission denied" on a
//! port below 1024 into one that says how to allow it. Each message names the port by what it is
//! for ([`Port`]: a listener, the control port, the admin port) and advises for that. [`accept_loop`] accepts until
//! stopped; out of descriptors, it answers one waiting client through a spare descriptor kept
//! for that, and backs off instead of spinning, so every port behaves the same when galera-lb
//! runs out of descriptors.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What a listening socket is for: messages name it so, and give advice that fits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// A proxy listener, by name.
    Listener(String),
    /// The glbd-compatible control port (`control.bind`).
    Control,
    /// The admin HTTP port (`admin.bind`).
    Admin,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Port::Listener(name) => write!(f, "listener '{name}'"),
            Port::Control => f.write_str("the control port (control.bind)"),
            Port::Admin => f.write_str("the admin port (admin.bind)"),
        }
    }
}

impl Port {
    /// How to move it elsewhere, as the end of a sentence.
    fn elsewhere(&self) -> &'static str {
        match self {
            Port::Listener(_) => "give this listener another `bind`",
            Port::Control => "give control.bind another port",
            Port::Admin => "give admin.bind another port",
        }
    }

    /// Who else may be on the port, and how to stop it.
    fn usual_holder(&self) -> &'static str {
        match self {
            Port::Listener(_) => {
                " (Debian's mariadb-server package starts a server on 3306: `systemctl stop \
                 mariadb`)"
            }
            Port::Control => " (a glbd still running? `systemctl stop glbd`)",
            Port::Admin => "",
        }
    }
}

/// Why a listening socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for {port}: {reason}")]
pub struct BindError {
    pub port: Port,
    pub address: SocketAddr,
    pub reason: String,
}

/// The advice for a port below 1024 refused for want of privilege.
fn privileged_port_advice(port: &Port) -> String {
    let binary = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "/usr/bin/galera-lb".to_string());
    format!(
        "permission denied: a port below 1024 needs the CAP_NET_BIND_SERVICE capability. For \
         the galera-lb service, grant it in a drop-in (`systemctl edit galera-lb`): [Service] \
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE and \
         AmbientCapabilities=CAP_NET_BIND_SERVICE; run by hand, `setcap \
         cap_net_bind_service=+ep {binary}` (as root); or {} from 1024 up",
        match port {
            Port::Listener(_) => "give this listener a port",
            Port::Control => "give control.bind a port",
            Port::Admin => "give admin.bind a port",
        }
    )
}

/// How a listening socket is opened.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// SO_REUSEPORT (several processes may share the port).
    pub reuse_port: bool,
    pub backlog: u32,
}

/// Opens a listening socket for `port` (what it is for, in messages) on `address`.
pub(crate) fn bind(
    port: Port,
    address: SocketAddr,
    options: ListenOptions,
) -> Result<TcpListener, BindError> {
    let open = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    let error = |reason: String| BindError {
        port: port.clone(),
        address,
        reason,
    };
    let std_listener = open().map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            let holder = crate::core::port_owner::describe(address.port())
                .map(|who| format!(" by {who}"))
                .unwrap_or_default();
            error(format!(
                "the address is already in use{holder}. Stop that program{} or {}",
                port.usual_holder(),
                port.elsewhere()
            ))
        } else if e.kind() == io::ErrorKind::PermissionDenied && address.port() < 1024 {
            error(privileged_port_advice(&port))
        } else {
            error(e.to_string())
        }
    })?;
    TcpListener::from_std(std_listener).map_err(|e| error(e.to_string()))
}

/// First and longest pause after an accept error that means "out of resources".
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on `listener` until `stop` is cancelled, handing each client to `admit`; the socket
/// is closed on return, so new clients are refused at once. `name` labels log lines and
/// `errors` counts failed accepts.
///
/// Out of descriptors (EMFILE, ENFILE), it gives up a spare descriptor it keeps for the purpose,
/// accepts one waiting client with it and hands that client to `overflow` (a listener sends
/// ERR 1040 and closes), so that clients are told rather than left waiting; then, and on
/// other resource errors (ENOBUFS, ENOMEM), it backs off, from 5 ms doubling to 1 s, and warns
/// once per episode. Any other error (a client gone between SYN and accept) is counted and
/// passed over.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: &str,
    errors: &AtomicU64,
    stop: &CancellationToken,
    mut admit: impl FnMut(TcpStream, SocketAddr),
    mut overflow: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut spare = open_spare();
    loop {
        if spare.is_none() {
            spare = open_spare();
        }
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(stream, peer);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if backoff == ACCEPT_BACKOFF_MIN {
                    warn!(listener = %name, error = %e, "accept failed, out of resources; backing off");
                }
                if is_out_of_descriptors(&e) && spare.take().is_some() {
                    // The spare's descriptor is free now: one waiting client can be told.
                    let waiting = tokio::time::timeout(ACCEPT_BACKOFF_MIN, listener.accept());
                    if let Ok(Ok((stream, peer))) = waiting.await {
                        overflow(stream, peer);
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                debug!(listener = %name, error = %e, "accept failed");
            }
        }
    }
    info!(listener = %name, "stopped accepting");
}

/// A descriptor held only to be closed when the process runs out, see [`accept_loop`].
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether a connection to `target` would reach `bind`, a socket of this host: the same port,
/// and the same address, or any address of this host when `bind` is the unspecified address
/// (`0.0.0.0` or `::`). Used to refuse a backend that is one of galera-lb's own ports.
pub(crate) fn reaches(target: SocketAddr, bind: SocketAddr) -> bool {
    if target.port() != bind.port() {
        return false;
    }
    let target_ip = target.ip().to_canonical();
    if target_ip == bind.ip().to_canonical() {
        return true;
    }
    bind.ip().is_unspecified()
        && (target_ip.is_loopback() || target_ip.is_unspecified() || is_local(target_ip))
}

/// Whether `ip` is an address of one of this host's interfaces (getifaddrs).
fn is_local(ip: std::net::IpAddr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return false;
    }
    let mut found = false;
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let address = unsafe { (*entry).ifa_addr };
        if !address.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says which struct it is.
            let local = unsafe {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        Some(std::net::IpAddr::from(
                            u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                        ))
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        Some(std::net::IpAddr::from(v6.sin6_addr.s6_addr))
                    }
                    _ => None,
                }
            };
            if local.is_some_and(|local| local.to_canonical() == ip) {
                found = true;
                break;
            }
        }
        // SAFETY: as above.
        entry = unsafe { (*entry).ifa_next };
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};

    #[test]
    fn a_target_reaches_a_bind_of_the_same_port_on_this_host() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(reaches(at("127.0.0.1:3306"), at("127.0.0.1:3306")));
        assert!(reaches(at("127.0.0.1:3306"), at("0.0.0.0:3306")));
        assert!(reaches(at("[::1]:3306"), at("[::]:3306")));
        assert!(reaches(at("[::ffff:127.0.0.1]:3306"), at("127.0.0.1:3306")));
        assert!(!reaches(at("127.0.0.1:3316"), at("127.0.0.1:3306")));
        assert!(!reaches(at("127.0.0.2:3306"), at("127.0.0.1:3306")));
        // An address of no interface here (TEST-NET-3) is another host.
        assert!(!reaches(at("203.0.113.7:3306"), at("0.0.0.0:3306")));
    }
    use std::process::{Command, Stdio};

    use super::*;

    const CHILD: &str = "GALERA_LB_SPARE_DESCRIPTOR_CHILD";

    /// Out of descriptors, a waiting client is accepted through the spare descriptor and handed
    /// to `overflow` instead of being left in the backlog. The process runs out of descriptors
    /// in a child (this test binary again, running [`spare_descriptor_child`]), so that the
    /// other tests keep theirs.
    #[test]
    fn out_of_descriptors_a_waiting_client_is_answered_through_the_spare() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "core::net::tests::spare_descriptor_child",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = loop {
            let line = lines.next().expect("the child reports its port").unwrap();
            if let Some(port) = line.strip_prefix("out of descriptors, listening on ") {
                break port.parse().unwrap();
            }
        };
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let read = client.read_to_string(&mut answer);
        let _ = child.kill();
        let _ = child.wait();
        read.expect("an answer within 5 s");
        assert_eq!(answer, "overflow\n");
    }

    /// Not a test of its own: the child process of the test above (it returns at once unless
    /// started by it). Lowers its descriptor limit, starts an accept loop, takes every
    /// descriptor left, says on which port it listens, and answers the first client it cannot
    /// admit with "overflow".
    #[tokio::test]
    async fn spare_descriptor_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let limit = libc::rlimit {
            rlim_cur: 256,
            rlim_max: crate::core::fd_budget::file_limit().unwrap().hard as _,
        };
        // SAFETY: setrlimit reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let listener = bind(
            Port::Listener("test".into()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ListenOptions {
                reuse_port: false,
                backlog: 16,
            },
        )
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        let errors = AtomicU64::new(0);
        let stop = CancellationToken::new();
        let accept = accept_loop(
            listener,
            "test",
            &errors,
            &stop,
            |_, _| panic!("admitted although out of descriptors"),
            |stream, _| {
                let mut stream = stream.into_std().unwrap();
                stream.set_nonblocking(false).unwrap();
                stream.write_all(b"overflow\n").unwrap();
                std::process::exit(0);
            },
        );
        tokio::pin!(accept);
        // Let the loop open its spare descriptor, then take all the others.
        let _ = tokio::time::timeout(Duration::from_millis(50), &mut accept).await;
        let mut taken = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            taken.push(file);
        }
        println!("out of descriptors, listening on {port}");
        std::io::stdout().flush().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), accept).await;
        panic!("no client was answered through the spare descriptor in 10 s");
    }
}
