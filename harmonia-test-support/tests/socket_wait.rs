//! `wait_for_path` on unix sockets, alone in its test binary: while a test in the same process spawns a
//! child, the child holds a copy of every descriptor until it execs, so a listener that was just closed
//! could still accept a connection there.

use std::time::Duration;

use harmonia_test_support::wait_for_path;

#[test]
fn a_socket_is_ready_only_while_someone_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    assert!(!wait_for_path(&socket, Duration::from_millis(100)));
    std::fs::remove_file(&socket).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert!(wait_for_path(&socket, Duration::from_secs(5)));
}
