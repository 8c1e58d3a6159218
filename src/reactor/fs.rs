//! Thin, safe wrappers over the file-system and process syscalls that the
//! loop makes outside the hot paths: `stat`/`fstat`/`unlink` for unix-socket
//! paths and files handed to `sendfile`, and a non-blocking `waitpid`.
//!
//! Same contract as `net`: fds are numbers the caller keeps open for the
//! call; the calls follow `syscall`'s contract; errors are `io::Error`,
//! converted at the Python boundary.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::syscall::syscall;

/// What the loop reads from a `stat` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatInfo {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: i64,
}

// `st_mode` and `S_IF*` are u16 on macOS, u32 on Linux: the casts are
// needed on one of them.
#[allow(clippy::unnecessary_cast)]
impl StatInfo {
    fn from_raw(st: &libc::stat) -> Self {
        Self {
            mode: st.st_mode as u32,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
        }
    }

    /// Whether the file is a socket (`S_ISSOCK`).
    pub fn is_socket(self) -> bool {
        self.mode & (libc::S_IFMT as u32) == libc::S_IFSOCK as u32
    }
}

fn c_path(path: &[u8]) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `stat(path)` (follows symlinks, as `os.stat`).
pub fn stat(path: &[u8]) -> io::Result<StatInfo> {
    let path = c_path(path)?;
    // SAFETY: all-zero bytes are a valid `libc::stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a live, writable struct.
    syscall!(stat(path.as_ptr(), &mut st))?;
    Ok(StatInfo::from_raw(&st))
}

/// `fstat(fd)`.
pub fn fstat(fd: RawFd) -> io::Result<StatInfo> {
    // SAFETY: all-zero bytes are a valid `libc::stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable struct; `fd` is a number.
    syscall!(fstat(fd, &mut st))?;
    Ok(StatInfo::from_raw(&st))
}

/// `unlink(path)`.
pub fn unlink(path: &[u8]) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is NUL-terminated.
    syscall!(unlink(path.as_ptr())).map(drop)
}

/// `waitpid(pid, WNOHANG)`: the child's exit code (negative signal number
/// if a signal killed it, as `Popen.returncode`), or `None` while it runs.
/// `ECHILD` (reaped elsewhere, or not our child) is an error.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live local the kernel writes; WNOHANG never
    // blocks.
    let got = syscall!(waitpid(pid, &mut status, libc::WNOHANG))?;
    if got == 0 {
        return Ok(None);
    }
    if libc::WIFEXITED(status) {
        Ok(Some(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Ok(Some(-libc::WTERMSIG(status)))
    } else {
        // Stopped/continued are not reported without WUNTRACED/WCONTINUED;
        // Python's waitstatus_to_exitcode refuses them too.
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;

    #[test]
    fn stat_sees_a_socket_and_unlink_removes_it() {
        let dir = std::env::temp_dir().join(format!("oxloop-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let _listener = UnixListener::bind(&path).unwrap();
        let bytes = path.to_str().unwrap().as_bytes();
        let info = stat(bytes).unwrap();
        assert!(info.is_socket());
        unlink(bytes).unwrap();
        assert_eq!(stat(bytes).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn fstat_gives_the_size_of_a_file() {
        let f = std::fs::File::open("/proc/self/exe").or_else(|_| std::fs::File::open("/bin/sh"));
        let f = f.unwrap();
        let info = fstat(f.as_raw_fd()).unwrap();
        assert!(!info.is_socket());
        assert_eq!(info.size as u64, f.metadata().unwrap().len());
    }

    #[test]
    // The child is reaped by `try_wait`, which is what is tested.
    #[allow(clippy::zombie_processes)]
    fn try_wait_reports_the_exit_code() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let code = loop {
            if let Some(code) = try_wait(pid).unwrap() {
                break code;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(code, 3);
        assert_eq!(
            try_wait(pid).unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
}
