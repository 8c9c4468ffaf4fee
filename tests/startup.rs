//! Start-up under production limits: the server must start with the machine's cores under
//! the default `ulimit -l` (8 MiB) without CAP_IPC_LOCK (which root has here, and production
//! services usually do not). `capsh` (Debian package libcap2-bin, installed by ./test.sh)
//! drops the capability.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn starts_under_an_8_mib_memlock_limit_without_cap_ipc_lock() {
    let capsh = ["/usr/sbin/capsh", "/sbin/capsh", "/usr/bin/capsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("capsh not found: install libcap2-bin (./test.sh does)");
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let script = format!(
        "ulimit -l 8192 && grep CapEff /proc/self/status >&2 && exec {bin} --host 127.0.0.1 --port 0"
    );
    let mut child = Command::new(capsh)
        .args(["--drop=cap_ipc_lock", "--", "-c", &script])
        .env("SHARDCAST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run capsh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listening = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("shardcast listening") => {
                listening = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    let _ =
                        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                    panic!("server exited ({status}) before listening:\n{err}");
                }
            }
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    let line = listening.unwrap_or_else(|| panic!("no listening line within 30 s:\n{err}"));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(line.ends_with(&format!("shards={cores}")), "{line}");
    // CapEff printed by the shell that exec'd the server: bit 14 (CAP_IPC_LOCK) is clear.
    let capeff = err
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("CapEff line");
    assert_eq!(capeff & (1 << 14), 0, "CAP_IPC_LOCK still effective");
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}
