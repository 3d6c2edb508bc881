//! A [`Syscall`] that records every call instead of making it, for unit tests
//! of the setup sequence (no root, no namespaces needed).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::syscall::{FileKind, Forked, SysResult, Syscall};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    ReadFile(PathBuf),
    WriteFile(PathBuf, String),
    CreateFile(PathBuf),
    Touch(PathBuf),
    Mkdir(PathBuf, u32),
    Rmdir(PathBuf),
    Symlink(PathBuf, PathBuf),
    Unshare(CloneFlags),
    Setns(CloneFlags),
    SpawnUserNamespace,
    ReleaseUserNamespace(i32),
    OpenNamespace(PathBuf),
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    BindIdMapped(PathBuf, PathBuf),
    UmountDetach(PathBuf),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    SetGroups(Vec<u32>),
    SetGid(u32),
    SetUid(u32),
    SetHostname(String),
    LoopbackUp,
    ParentDeathSignal,
    ProcessName(String),
    NotDumpable,
    NewSession,
    ResetSignals,
    Umask(u32),
    CloexecFrom(RawFd),
    RedirectStdio(RawFd),
    Exec(String),
    Kill(i32, Signal),
}

/// Records calls; answers reads from a table; fails calls on chosen paths.
#[derive(Default)]
pub(crate) struct RecordingSyscall {
    calls: Mutex<Vec<Call>>,
    files: HashMap<PathBuf, String>,
    failures: HashMap<PathBuf, Errno>,
}

impl RecordingSyscall {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Calls naming `path` fail with `errno`.
    pub(crate) fn failing(mut self, path: impl Into<PathBuf>, errno: Errno) -> Self {
        self.failures.insert(path.into(), errno);
        self
    }

    /// `read_file(path)` answers `contents`.
    pub(crate) fn with_file(mut self, path: impl Into<PathBuf>, contents: &str) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }

    fn check(&self, path: &Path) -> SysResult<()> {
        match self.failures.get(path) {
            Some(errno) => Err(*errno),
            None => Ok(()),
        }
    }
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .unwrap_or_else(|e| panic!("open /dev/null: {e}"))
}

impl Syscall for RecordingSyscall {
    fn read_file(&self, path: &Path) -> SysResult<String> {
        self.record(Call::ReadFile(path.into()));
        self.check(path)?;
        self.files.get(path).cloned().ok_or(Errno::ENOENT)
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
        self.record(Call::WriteFile(
            path.into(),
            String::from_utf8_lossy(contents).into_owned(),
        ));
        self.check(path)
    }

    fn create_file(&self, path: &Path, _contents: &[u8], _mode: u32) -> SysResult<()> {
        self.record(Call::CreateFile(path.into()));
        self.check(path)
    }

    fn touch(&self, path: &Path) -> SysResult<()> {
        self.record(Call::Touch(path.into()));
        self.check(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        self.record(Call::Mkdir(path.into(), mode));
        self.check(path)
    }

    fn rmdir(&self, path: &Path) -> SysResult<()> {
        self.record(Call::Rmdir(path.into()));
        self.check(path)
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        self.record(Call::Symlink(target.into(), link.into()));
        self.check(link)
    }

    fn file_kind(&self, path: &Path) -> SysResult<FileKind> {
        self.check(path)?;
        Ok(FileKind::Dir)
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        self.record(Call::Unshare(flags));
        Ok(())
    }

    fn setns(&self, _fd: BorrowedFd<'_>, nstype: CloneFlags) -> SysResult<()> {
        self.record(Call::Setns(nstype));
        Ok(())
    }

    fn spawn_user_namespace(&self) -> SysResult<Pid> {
        self.record(Call::SpawnUserNamespace);
        Ok(Pid::from_raw(4242))
    }

    fn release_user_namespace(&self, holder: Pid) -> SysResult<()> {
        self.record(Call::ReleaseUserNamespace(holder.as_raw()));
        Ok(())
    }

    fn open_namespace(&self, path: &Path) -> SysResult<OwnedFd> {
        self.record(Call::OpenNamespace(path.into()));
        self.check(path)?;
        Ok(dev_null())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.into(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        self.check(target)
    }

    fn mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        self.check(path)?;
        // as if the kernel had locked nosuid on the source mount
        Ok(MsFlags::MS_NOSUID)
    }

    fn bind_id_mapped(
        &self,
        source: &Path,
        target: &Path,
        _userns: BorrowedFd<'_>,
    ) -> SysResult<()> {
        self.record(Call::BindIdMapped(source.into(), target.into()));
        self.check(source)
    }

    fn umount_detach(&self, target: &Path) -> SysResult<()> {
        self.record(Call::UmountDetach(target.into()));
        self.check(target)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        self.record(Call::PivotRoot(new_root.into(), put_old.into()));
        self.check(new_root)
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        self.record(Call::Chdir(path.into()));
        self.check(path)
    }

    fn set_groups(&self, groups: &[u32]) -> SysResult<()> {
        self.record(Call::SetGroups(groups.to_vec()));
        Ok(())
    }

    fn set_gid(&self, gid: u32) -> SysResult<()> {
        self.record(Call::SetGid(gid));
        Ok(())
    }

    fn set_uid(&self, uid: u32) -> SysResult<()> {
        self.record(Call::SetUid(uid));
        Ok(())
    }

    fn set_hostname(&self, name: &str) -> SysResult<()> {
        self.record(Call::SetHostname(name.into()));
        Ok(())
    }

    fn loopback_up(&self) -> SysResult<()> {
        self.record(Call::LoopbackUp);
        Ok(())
    }

    fn set_parent_death_signal(&self) -> SysResult<()> {
        self.record(Call::ParentDeathSignal);
        Ok(())
    }

    fn set_process_name(&self, name: &CStr) -> SysResult<()> {
        self.record(Call::ProcessName(name.to_string_lossy().into_owned()));
        Ok(())
    }

    fn set_not_dumpable(&self) -> SysResult<()> {
        self.record(Call::NotDumpable);
        Ok(())
    }

    fn new_session(&self) -> SysResult<()> {
        self.record(Call::NewSession);
        Ok(())
    }

    fn reset_signals(&self) -> SysResult<()> {
        self.record(Call::ResetSignals);
        Ok(())
    }

    fn set_umask(&self, mask: u32) {
        self.record(Call::Umask(mask));
    }

    fn close_other_fds(&self, _keep: &[RawFd]) -> SysResult<()> {
        Ok(())
    }

    fn cloexec_from(&self, first: RawFd) -> SysResult<()> {
        self.record(Call::CloexecFrom(first));
        Ok(())
    }

    fn redirect_stdio(&self, output: RawFd) -> SysResult<()> {
        self.record(Call::RedirectStdio(output));
        Ok(())
    }

    fn exec(&self, program: &CStr, _argv: &[CString], _envp: &[CString]) -> Errno {
        let program = program.to_string_lossy().into_owned();
        self.record(Call::Exec(program.clone()));
        self.failures
            .get(Path::new(&program))
            .copied()
            .unwrap_or(Errno::ENOENT)
    }

    fn fork(&self) -> SysResult<Forked> {
        Err(Errno::ENOSYS)
    }

    fn wait(&self, _pid: Option<Pid>, _block: bool) -> SysResult<Option<WaitStatus>> {
        Err(Errno::ECHILD)
    }

    fn kill(&self, pid: Pid, signal: Signal) -> SysResult<()> {
        self.record(Call::Kill(pid.as_raw(), signal));
        Ok(())
    }

    fn exit(&self, code: i32) -> ! {
        panic!("the fake cannot exit (code {code})")
    }

    fn geteuid(&self) -> u32 {
        0
    }

    fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)> {
        Err(Errno::ENOSYS)
    }

    fn write_fd(&self, _fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        Ok(buf.len())
    }

    fn read_fd(&self, _fd: RawFd, _buf: &mut [u8]) -> SysResult<usize> {
        Ok(0)
    }

    fn poll_readable(&self, fds: &[RawFd], timeout: Duration) -> SysResult<Vec<bool>> {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(vec![false; fds.len()])
    }

    fn spawn_helper(&self, _command: &mut Command, _keep: &[RawFd]) -> io::Result<Child> {
        Err(io::Error::other("the fake starts no helpers"))
    }
}
