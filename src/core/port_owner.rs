//! Finds which program listens on a TCP port, to turn "address in use" into advice.
//!
//! Linux only and best effort: it reads `/proc/net/tcp{,6}` for a listening socket on the port and
//! then looks through `/proc/*/fd` for the process that holds it (which needs the right to read
//! that process's descriptors, as root has). Anything it cannot read yields `None`.

use std::fs;

/// "mariadbd (pid 1234)", or "a process of another user" when the socket is found but its owner
/// is not visible; `None` when nothing is found.
pub(crate) fn describe(port: u16) -> Option<String> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let owner = fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let holds_socket = fs::read_dir(entry.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|target| {
                    let target = target.to_string_lossy();
                    inodes
                        .iter()
                        .any(|inode| target == format!("socket:[{inode}]"))
                })
            });
        holds_socket.then(|| {
            let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            format!("{} (pid {pid})", name.trim())
        })
    });
    Some(owner.unwrap_or_else(|| "a process this user cannot see".to_string()))
}

/// The socket inodes in a `/proc/net/tcp` table that listen (state 0A) on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (local_port == port && *state == "0A").then(|| inode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 0100007F:D3E2 01 00000000:00000000 00:00000000 00000000   108        0 41299 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 3306), vec!["41234".to_string()]);
        assert!(listening_inodes(table, 3307).is_empty());
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let who = describe(port).expect("our own socket is visible");
        assert!(
            who.contains(&format!("pid {}", std::process::id())),
            "{who}"
        );
    }
}
