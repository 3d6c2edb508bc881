//! Every kernel call the sandbox makes, behind the [`Syscall`] trait (the
//! youki model): the setup logic in `namespaces`, `limits` and `process` is
//! written against the trait, so unit tests can run it against a recording
//! fake without root. [`LinuxSyscall`] is the real implementation on `nix`;
//! this is the only file of the sandbox with `unsafe` code.
//!
//! Most methods are called in forked children of a possibly multi-threaded
//! process; they make plain system calls and take no locks.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::statvfs::FsFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

/// Result of one kernel call.
pub(crate) type SysResult<T> = Result<T, Errno>;

/// What a path is, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    File,
    Symlink,
    Other,
}

/// Which side of a `fork` this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    Parent(Pid),
    Child,
}

/// The kernel calls of the sandbox.
pub(crate) trait Syscall: Send + Sync {
    // --- files: cgroupfs, /proc maps, mount points ---
    /// Reads a whole (small) file.
    fn read_file(&self, path: &Path) -> SysResult<String>;
    /// Writes to an existing file (cgroup and /proc files): no create, no truncate.
    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()>;
    /// Creates or replaces a regular file.
    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> SysResult<()>;
    /// Creates an empty file if there is nothing at `path` (a bind target).
    fn touch(&self, path: &Path) -> SysResult<()>;
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()>;
    fn rmdir(&self, path: &Path) -> SysResult<()>;
    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()>;
    fn file_kind(&self, path: &Path) -> SysResult<FileKind>;

    // --- namespaces ---
    fn unshare(&self, flags: CloneFlags) -> SysResult<()>;
    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> SysResult<()>;
    /// Forks a holder process that unshares a user namespace and waits, so
    /// its maps can be written and the namespace opened.
    fn spawn_user_namespace(&self) -> SysResult<Pid>;
    /// Ends a holder from [`Syscall::spawn_user_namespace`].
    fn release_user_namespace(&self, holder: Pid) -> SysResult<()>;
    fn open_namespace(&self, path: &Path) -> SysResult<OwnedFd>;

    // --- mounts ---
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// The per-mount flags of the mount holding `path` (to keep locked flags on remount).
    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags>;
    /// Bind-mounts `source` (not its submounts) at `target` with the id map of `userns`.
    fn bind_id_mapped(&self, source: &Path, target: &Path, userns: BorrowedFd<'_>)
        -> SysResult<()>;
    fn umount_detach(&self, target: &Path) -> SysResult<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()>;
    fn chdir(&self, path: &Path) -> SysResult<()>;

    // --- identity, host name, network ---
    fn set_groups(&self, groups: &[u32]) -> SysResult<()>;
    /// `setresgid(gid, gid, gid)`.
    fn set_gid(&self, gid: u32) -> SysResult<()>;
    /// `setresuid(uid, uid, uid)`.
    fn set_uid(&self, uid: u32) -> SysResult<()>;
    fn set_hostname(&self, name: &str) -> SysResult<()>;
    /// Brings `lo` up in the current network namespace.
    fn loopback_up(&self) -> SysResult<()>;

    // --- processes ---
    /// SIGKILL when the parent (thread) dies.
    fn set_parent_death_signal(&self) -> SysResult<()>;
    fn set_process_name(&self, name: &CStr) -> SysResult<()>;
    /// Not dumpable: no `/proc/<pid>/fd`, `mem` or ptrace for same-uid processes.
    fn set_not_dumpable(&self) -> SysResult<()>;
    fn new_session(&self) -> SysResult<()>;
    /// Default dispositions for all signals, none blocked.
    fn reset_signals(&self) -> SysResult<()>;
    fn set_umask(&self, mask: u32);
    /// Closes every descriptor from 3 up except `keep`.
    fn close_other_fds(&self, keep: &[RawFd]) -> SysResult<()>;
    /// Marks every descriptor from `first` up close-on-exec.
    fn cloexec_from(&self, first: RawFd) -> SysResult<()>;
    /// stdin from `/dev/null`, stdout and stderr to `output`.
    fn redirect_stdio(&self, output: RawFd) -> SysResult<()>;
    /// `execve`; returns only on failure.
    fn exec(&self, program: &CStr, argv: &[CString], envp: &[CString]) -> Errno;
    fn fork(&self) -> SysResult<Forked>;
    /// `waitpid`; `None` from a non-blocking wait means nothing changed.
    fn wait(&self, pid: Option<Pid>, block: bool) -> SysResult<Option<WaitStatus>>;
    fn kill(&self, pid: Pid, signal: Signal) -> SysResult<()>;
    /// `_exit`: no destructors, no atexit handlers (the parent's state is not ours).
    fn exit(&self, code: i32) -> !;
    fn geteuid(&self) -> u32;

    // --- pipes ---
    fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)>;
    fn write_fd(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize>;
    fn read_fd(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize>;
    /// Which of `fds` are readable (or hung up) within `timeout`.
    fn poll_readable(&self, fds: &[RawFd], timeout: Duration) -> SysResult<Vec<bool>>;

    /// Starts a helper program that inherits the descriptors `keep` (which are
    /// close-on-exec in this process).
    fn spawn_helper(&self, command: &mut Command, keep: &[RawFd]) -> io::Result<Child>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinuxSyscall;

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers pass descriptors they keep open for the duration of the
    // call (pipe ends owned by the run, or stdio); the borrow never outlives it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn io_errno(err: io::Error) -> Errno {
    err.raw_os_error()
        .map(Errno::from_raw)
        .unwrap_or(Errno::EIO)
}

impl Syscall for LinuxSyscall {
    fn read_file(&self, path: &Path) -> SysResult<String> {
        let mut text = String::new();
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io_errno)?;
        Ok(text)
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_errno)?;
        // cgroupfs and procfs take one write per value
        let written = file.write(contents).map_err(io_errno)?;
        if written != contents.len() {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> SysResult<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(io_errno)
    }

    fn touch(&self, path: &Path) -> SysResult<()> {
        match nix::fcntl::open(
            path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(_fd) => Ok(()),
            // something is there already; the mount itself tells if it fits
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        nix::unistd::mkdir(path, Mode::from_bits_truncate(mode))
    }

    fn rmdir(&self, path: &Path) -> SysResult<()> {
        std::fs::remove_dir(path).map_err(io_errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }

    fn file_kind(&self, path: &Path) -> SysResult<FileKind> {
        let meta = std::fs::symlink_metadata(path).map_err(io_errno)?;
        let kind = meta.file_type();
        Ok(if kind.is_dir() {
            FileKind::Dir
        } else if kind.is_file() {
            FileKind::File
        } else if kind.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        nix::sched::unshare(flags)
    }

    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> SysResult<()> {
        nix::sched::setns(fd, nstype)
    }

    fn spawn_user_namespace(&self) -> SysResult<Pid> {
        let (ready_r, ready_w) = self.pipe()?;
        match self.fork()? {
            Forked::Child => {
                drop(ready_r);
                let _ = self.set_parent_death_signal();
                let result = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
                let report = match result {
                    Ok(()) => 0i32,
                    Err(e) => e as i32,
                };
                let _ = self.write_fd(ready_w.as_raw_fd(), &report.to_ne_bytes());
                if result.is_err() {
                    self.exit(1);
                }
                // the namespace lives while this process or an open fd does
                loop {
                    nix::unistd::pause();
                }
            }
            Forked::Parent(holder) => {
                drop(ready_w);
                let mut report = [0u8; 4];
                let n = read_full(self, ready_r.as_raw_fd(), &mut report)?;
                let code = i32::from_ne_bytes(report);
                if n != 4 || code != 0 {
                    let _ = self.release_user_namespace(holder);
                    return Err(if n == 4 {
                        Errno::from_raw(code)
                    } else {
                        Errno::ECHILD
                    });
                }
                Ok(holder)
            }
        }
    }

    fn release_user_namespace(&self, holder: Pid) -> SysResult<()> {
        self.kill(holder, Signal::SIGKILL)?;
        self.wait(Some(holder), true).map(drop)
    }

    fn open_namespace(&self, path: &Path) -> SysResult<OwnedFd> {
        nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        let flags = nix::sys::statvfs::statvfs(path)?.flags();
        let mut out = MsFlags::empty();
        for (st, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if flags.contains(st) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn bind_id_mapped(
        &self,
        source: &Path,
        target: &Path,
        userns: BorrowedFd<'_>,
    ) -> SysResult<()> {
        let source = path_cstring(source)?;
        let target = path_cstring(target)?;
        let empty = c"";
        // SAFETY: open_tree with a valid NUL-terminated path; the result is a
        // new descriptor we own.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint,
            )
        };
        let tree = Errno::result(tree)?;
        // SAFETY: the kernel just returned this descriptor and nobody else owns it.
        let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr on our detached tree, with a mount_attr that
        // lives across the call and its exact size.
        let set = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        Errno::result(set)?;
        // SAFETY: move_mount of our detached tree onto a NUL-terminated path.
        let moved = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(moved).map(drop)
    }

    fn umount_detach(&self, target: &Path) -> SysResult<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chdir(path)
    }

    fn set_groups(&self, groups: &[u32]) -> SysResult<()> {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups)
    }

    fn set_gid(&self, gid: u32) -> SysResult<()> {
        let gid = Gid::from_raw(gid);
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn set_uid(&self, uid: u32) -> SysResult<()> {
        let uid = Uid::from_raw(uid);
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn set_hostname(&self, name: &str) -> SysResult<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> SysResult<()> {
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS fills the flags of the named interface into our ifreq.
        let got = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
        Errno::result(got)?;
        // SAFETY: after SIOCGIFFLAGS the flags member of the union is the initialised one.
        unsafe {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
        let set = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
        Errno::result(set).map(drop)
    }

    fn set_parent_death_signal(&self) -> SysResult<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
    }

    fn set_process_name(&self, name: &CStr) -> SysResult<()> {
        nix::sys::prctl::set_name(name)
    }

    fn set_not_dumpable(&self) -> SysResult<()> {
        nix::sys::prctl::set_dumpable(false)
    }

    fn new_session(&self) -> SysResult<()> {
        nix::unistd::setsid().map(drop)
    }

    fn reset_signals(&self) -> SysResult<()> {
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }?;
        }
        SigSet::empty().thread_set_mask()
    }

    fn set_umask(&self, mask: u32) {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }

    fn close_other_fds(&self, keep: &[RawFd]) -> SysResult<()> {
        let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
        keep.sort_unstable();
        keep.dedup();
        let mut first: libc::c_uint = 3;
        for fd in keep.iter().map(|fd| *fd as libc::c_uint) {
            if fd > first {
                close_range(first, fd - 1, 0)?;
            }
            first = fd + 1;
        }
        close_range(first, libc::c_uint::MAX, 0)
    }

    fn cloexec_from(&self, first: RawFd) -> SysResult<()> {
        close_range(
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    }

    fn redirect_stdio(&self, output: RawFd) -> SysResult<()> {
        let null = nix::fcntl::open(c"/dev/null", OFlag::O_RDONLY, Mode::empty())?;
        nix::unistd::dup2_stdin(&null)?;
        nix::unistd::dup2_stdout(borrow(output))?;
        nix::unistd::dup2_stderr(borrow(output))
    }

    fn exec(&self, program: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
        match nix::unistd::execve(program, argv, envp) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }

    fn fork(&self) -> SysResult<Forked> {
        // SAFETY: the child only makes system calls and plain allocations
        // (glibc's fork resets the allocator's locks) before it execs or _exits;
        // it never returns into the caller's stack.
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Parent { child } => Ok(Forked::Parent(child)),
            ForkResult::Child => Ok(Forked::Child),
        }
    }

    fn wait(&self, pid: Option<Pid>, block: bool) -> SysResult<Option<WaitStatus>> {
        let flags = if block {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        loop {
            match nix::sys::wait::waitpid(pid, flags) {
                Ok(WaitStatus::StillAlive) => return Ok(None),
                Ok(status) => return Ok(Some(status)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn kill(&self, pid: Pid, signal: Signal) -> SysResult<()> {
        nix::sys::signal::kill(pid, signal)
    }

    fn exit(&self, code: i32) -> ! {
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(code) }
    }

    fn geteuid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)> {
        nix::unistd::pipe2(OFlag::O_CLOEXEC)
    }

    fn write_fd(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        loop {
            match nix::unistd::write(borrow(fd), buf) {
                Err(Errno::EINTR) => continue,
                other => return other,
            }
        }
    }

    fn read_fd(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
        loop {
            match nix::unistd::read(borrow(fd), buf) {
                Err(Errno::EINTR) => continue,
                other => return other,
            }
        }
    }

    fn poll_readable(&self, fds: &[RawFd], timeout: Duration) -> SysResult<Vec<bool>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        let mut polled: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(borrow(*fd), PollFlags::POLLIN))
            .collect();
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut polled, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        Ok(polled
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect())
    }

    fn spawn_helper(&self, command: &mut Command, keep: &[RawFd]) -> io::Result<Child> {
        let keep = keep.to_vec();
        // SAFETY: the hook runs between fork and exec and only calls fcntl,
        // which is async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for fd in &keep {
                    fcntl(borrow(*fd), FcntlArg::F_SETFD(FdFlag::empty()))
                        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                }
                Ok(())
            });
        }
        command.spawn()
    }
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_int) -> SysResult<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range only closes (or marks) descriptors; callers keep the
    // ones they still need out of the range.
    let result = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    Errno::result(result).map(drop)
}

fn path_cstring(path: &Path) -> SysResult<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Reads until `buf` is full or the writer hangs up; returns how much was read.
pub(crate) fn read_full(sys: &dyn Syscall, fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = sys.read_fd(fd, &mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Writes all of `buf`.
pub(crate) fn write_full(sys: &dyn Syscall, fd: RawFd, buf: &[u8]) -> SysResult<()> {
    let mut done = 0;
    while done < buf.len() {
        done += sys.write_fd(fd, &buf[done..])?;
    }
    Ok(())
}
