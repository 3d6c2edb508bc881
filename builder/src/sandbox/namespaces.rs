//! The setup sequence inside the sandbox, written against [`Syscall`]:
//!
//! 1. [`enter_namespaces`] (first child, still host root): join the run's
//!    cgroups, take a private mount namespace, create the user namespace and
//!    write its uid/gid maps, mount the build root (and id-mapped binds)
//!    id-mapped with that namespace, enter it as uid/gid 0, and unshare the
//!    mount, PID, UTS, IPC, cgroup (and network) namespaces it now owns.
//! 2. [`build_filesystem`] (PID 1 of the new PID namespace): `pivot_root` into
//!    the root, mount `/proc`, `/dev`, `/tmp`, `resolv.conf` and the binds with
//!    every target resolved inside the new root, detach the old root, set the
//!    host name, bring `lo` up, change to the working folder.
//! 3. [`exec_command`] (the command's process): stdio, umask, exec.
//!
//! Errors carry a [`Step`] and an index, both plain numbers, so a child can
//! send them through a pipe and the parent can describe them from the plan.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::error::SandboxError;
use super::plan::{FsStep, PlannedRoot, SetupPlan, TargetKind, INIT_NAME, OLD_ROOT};
use super::syscall::{FileKind, Syscall};

/// A step of the setup, as sent from a child to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    ResetSignals = 1,
    NewSession,
    ParentDeathSignal,
    JoinCgroup,
    PrivateMountNamespace,
    MakeMountsPrivate,
    CreateUserNamespace,
    WriteUidMap,
    WriteGidMap,
    OpenUserNamespace,
    IdMapRoot,
    IdMapBind,
    EnterUserNamespace,
    SetGroups,
    SetGid,
    SetUid,
    Unshare,
    ProcessName,
    NotDumpable,
    MountScratchRoot,
    RebindRoot,
    OldRootDir,
    PivotRoot,
    ChdirRoot,
    Filesystem,
    DetachOldRoot,
    RemoveOldRootDir,
    ReadOnlyRoot,
    Hostname,
    Loopback,
    WorkingFolder,
    Handshake,
    ForkInit,
    ForkCommand,
    Stdio,
    CloseDescriptors,
    WaitCommand,
    Exec,
}

impl Step {
    const ALL: [Step; 38] = [
        Step::ResetSignals,
        Step::NewSession,
        Step::ParentDeathSignal,
        Step::JoinCgroup,
        Step::PrivateMountNamespace,
        Step::MakeMountsPrivate,
        Step::CreateUserNamespace,
        Step::WriteUidMap,
        Step::WriteGidMap,
        Step::OpenUserNamespace,
        Step::IdMapRoot,
        Step::IdMapBind,
        Step::EnterUserNamespace,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::Unshare,
        Step::ProcessName,
        Step::NotDumpable,
        Step::MountScratchRoot,
        Step::RebindRoot,
        Step::OldRootDir,
        Step::PivotRoot,
        Step::ChdirRoot,
        Step::Filesystem,
        Step::DetachOldRoot,
        Step::RemoveOldRootDir,
        Step::ReadOnlyRoot,
        Step::Hostname,
        Step::Loopback,
        Step::WorkingFolder,
        Step::Handshake,
        Step::ForkInit,
        Step::ForkCommand,
        Step::Stdio,
        Step::CloseDescriptors,
        Step::WaitCommand,
        Step::Exec,
    ];

    pub(crate) fn from_u32(value: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == value)
    }
}

/// A failed step: which, which item of it (cgroup, bind, filesystem step), and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepError {
    pub step: Step,
    pub index: u32,
    pub errno: Errno,
}

trait StepResult<T> {
    fn at(self, step: Step) -> Result<T, StepError>;
    fn at_item(self, step: Step, index: usize) -> Result<T, StepError>;
}

impl<T> StepResult<T> for Result<T, Errno> {
    fn at(self, step: Step) -> Result<T, StepError> {
        self.at_item(step, 0)
    }

    fn at_item(self, step: Step, index: usize) -> Result<T, StepError> {
        self.map_err(|errno| StepError {
            step,
            index: index as u32,
            errno,
        })
    }
}

impl StepError {
    /// The error as the parent reports it, described from the plan.
    pub(crate) fn into_error(self, plan: &SetupPlan) -> SandboxError {
        SandboxError::Setup {
            step: describe(self.step, self.index as usize, plan),
            source: self.errno,
        }
    }
}

fn describe(step: Step, index: usize, plan: &SetupPlan) -> String {
    let path_at = |paths: &[PathBuf]| {
        paths
            .get(index)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    match step {
        Step::ResetSignals => "reset signal handlers".into(),
        Step::NewSession => "start a new session".into(),
        Step::ParentDeathSignal => "set the parent-death signal".into(),
        Step::JoinCgroup => format!("join the cgroup through {}", path_at(&plan.cgroup_procs)),
        Step::PrivateMountNamespace => "unshare a private mount namespace".into(),
        Step::MakeMountsPrivate => "make all mounts private".into(),
        Step::CreateUserNamespace => "create the user namespace".into(),
        Step::WriteUidMap => format!("write uid_map {}", plan.id_map.trim()),
        Step::WriteGidMap => format!("write gid_map {}", plan.id_map.trim()),
        Step::OpenUserNamespace => "open the user namespace".into(),
        Step::IdMapRoot => match &plan.root {
            PlannedRoot::Folder(path) => format!(
                "id-mapped mount of the build root {} (its filesystem must support id-mapped mounts, e.g. ext4, xfs, btrfs)",
                path.display()
            ),
            PlannedRoot::Scratch { .. } => "id-mapped mount of the root".into(),
        },
        Step::IdMapBind => {
            let source = plan
                .id_mapped_binds
                .get(index)
                .map(|b| b.source.display().to_string())
                .unwrap_or_default();
            format!("id-mapped bind of {source} (its filesystem must support id-mapped mounts, or bind it without id map)")
        }
        Step::EnterUserNamespace => "enter the user namespace".into(),
        Step::SetGroups => "drop supplementary groups".into(),
        Step::SetGid => "become gid 0 in the user namespace".into(),
        Step::SetUid => "become uid 0 in the user namespace".into(),
        Step::Unshare => format!("unshare namespaces {:?}", plan.namespaces),
        Step::ProcessName => "name the init process".into(),
        Step::NotDumpable => "make the init process undumpable".into(),
        Step::MountScratchRoot => "mount the in-memory root".into(),
        Step::RebindRoot => format!("bind {} onto itself", plan.staging_root.display()),
        Step::OldRootDir => format!("create {}", plan.put_old().display()),
        Step::PivotRoot => format!("pivot_root into {}", plan.staging_root.display()),
        Step::ChdirRoot => "change to the new root".into(),
        Step::Filesystem => plan
            .fs_steps
            .get(index)
            .map(FsStep::describe)
            .unwrap_or_else(|| "build the filesystem".into()),
        Step::DetachOldRoot => "detach the host's root".into(),
        Step::RemoveOldRootDir => format!("remove {OLD_ROOT}"),
        Step::ReadOnlyRoot => "remount / read-only".into(),
        Step::Hostname => format!("set the host name {}", plan.hostname),
        Step::Loopback => "bring up lo".into(),
        Step::WorkingFolder => format!("change to the working folder {}", plan.cwd.display()),
        Step::Handshake => "wait for the sandbox's parent".into(),
        Step::ForkInit => "fork the sandbox's init".into(),
        Step::ForkCommand => "fork the command".into(),
        Step::Stdio => "connect the command's stdio".into(),
        Step::CloseDescriptors => "close inherited descriptors".into(),
        Step::WaitCommand => "wait for the command".into(),
        Step::Exec => format!("execute {}", plan.program),
    }
}

/// Step 1, in the first child (host root, single-threaded after the fork).
/// Afterwards the process is uid 0 in the new user namespace and a member of
/// all new namespaces except the PID namespace (its next child is PID 1).
pub(crate) fn enter_namespaces(sys: &dyn Syscall, plan: &SetupPlan) -> Result<(), StepError> {
    sys.reset_signals().at(Step::ResetSignals)?;
    // no controlling terminal: /dev/tty inside cannot reach the host's
    sys.new_session().at(Step::NewSession)?;
    sys.set_parent_death_signal().at(Step::ParentDeathSignal)?;
    for (i, procs) in plan.cgroup_procs.iter().enumerate() {
        sys.write_file(procs, b"0").at_item(Step::JoinCgroup, i)?;
    }
    // A mount namespace still owned by the host's user namespace, where the
    // id-mapped mounts can be made (that needs host privilege).
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .at(Step::PrivateMountNamespace)?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .at(Step::MakeMountsPrivate)?;

    let userns = create_user_namespace(sys, plan)?;
    if let PlannedRoot::Folder(root) = &plan.root {
        sys.bind_id_mapped(root, &plan.staging_root, userns.as_fd())
            .at(Step::IdMapRoot)?;
    }
    for (i, bind) in plan.id_mapped_binds.iter().enumerate() {
        sys.bind_id_mapped(&bind.source, &bind.staging, userns.as_fd())
            .at_item(Step::IdMapBind, i)?;
    }

    sys.setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .at(Step::EnterUserNamespace)?;
    drop(userns);
    sys.set_groups(&[]).at(Step::SetGroups)?;
    sys.set_gid(0).at(Step::SetGid)?;
    sys.set_uid(0).at(Step::SetUid)?;
    // changing credentials cleared it
    sys.set_parent_death_signal().at(Step::ParentDeathSignal)?;
    sys.unshare(plan.namespaces).at(Step::Unshare)
}

/// A user namespace with the plan's id map, held open by a descriptor.
fn create_user_namespace(sys: &dyn Syscall, plan: &SetupPlan) -> Result<OwnedFd, StepError> {
    let holder = sys.spawn_user_namespace().at(Step::CreateUserNamespace)?;
    let proc_dir = PathBuf::from(format!("/proc/{holder}"));
    let opened = (|| {
        // written by host root: no setgroups "deny" needed, and the full range is allowed
        sys.write_file(&proc_dir.join("uid_map"), plan.id_map.as_bytes())
            .at(Step::WriteUidMap)?;
        sys.write_file(&proc_dir.join("gid_map"), plan.id_map.as_bytes())
            .at(Step::WriteGidMap)?;
        sys.open_namespace(&proc_dir.join("ns/user"))
            .at(Step::OpenUserNamespace)
    })();
    let released = sys
        .release_user_namespace(holder)
        .at(Step::CreateUserNamespace);
    let userns = opened?;
    released?;
    Ok(userns)
}

/// Step 2, in PID 1 of the new PID namespace.
pub(crate) fn build_filesystem(sys: &dyn Syscall, plan: &SetupPlan) -> Result<(), StepError> {
    sys.set_parent_death_signal().at(Step::ParentDeathSignal)?;
    sys.set_process_name(INIT_NAME).at(Step::ProcessName)?;
    // init holds the status pipe to the parent: the command (same uid) must
    // not reach it through /proc/1/fd to forge reports
    sys.set_not_dumpable().at(Step::NotDumpable)?;
    // mount points keep exactly the modes asked for
    sys.set_umask(0);
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .at(Step::MakeMountsPrivate)?;
    match plan.root {
        PlannedRoot::Scratch { size } => {
            let data = format!("mode=0755,size={size}");
            sys.mount(
                Some(Path::new("tmpfs")),
                &plan.staging_root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&data),
            )
            .at(Step::MountScratchRoot)?;
        }
        // The id-mapped root came from the host-owned mount namespace, so it is
        // locked here and pivot_root refuses it; a bind of it (same id map) is ours.
        PlannedRoot::Folder(_) => sys
            .mount(
                Some(&plan.staging_root),
                &plan.staging_root,
                None,
                MsFlags::MS_BIND,
                None,
            )
            .at(Step::RebindRoot)?,
    }
    let put_old = plan.put_old();
    match sys.mkdir(&put_old, 0o700) {
        Ok(()) => {}
        // left by an earlier run that died; a symlink there is refused
        Err(Errno::EEXIST) if sys.file_kind(&put_old) == Ok(FileKind::Dir) => {}
        Err(e) => return Err(e).at(Step::OldRootDir),
    }
    sys.pivot_root(&plan.staging_root, &put_old)
        .at(Step::PivotRoot)?;
    sys.chdir(Path::new("/")).at(Step::ChdirRoot)?;

    for (i, step) in plan.fs_steps.iter().enumerate() {
        run_fs_step(sys, step).at_item(Step::Filesystem, i)?;
    }

    let old_root = Path::new(OLD_ROOT);
    sys.umount_detach(old_root).at(Step::DetachOldRoot)?;
    sys.rmdir(old_root).at(Step::RemoveOldRootDir)?;
    if plan.read_only_root {
        remount_read_only(sys, Path::new("/")).at(Step::ReadOnlyRoot)?;
    }
    sys.set_hostname(&plan.hostname).at(Step::Hostname)?;
    if plan.own_network() {
        sys.loopback_up().at(Step::Loopback)?;
    }
    sys.chdir(&plan.cwd).at(Step::WorkingFolder)
}

fn run_fs_step(sys: &dyn Syscall, step: &FsStep) -> Result<(), Errno> {
    match step {
        FsStep::Dir { path, mode } => ensure_dir(sys, path, *mode),
        FsStep::Mount {
            fstype,
            target,
            flags,
            data,
        } => sys.mount(
            Some(Path::new(fstype)),
            target,
            Some(fstype),
            *flags,
            (!data.is_empty()).then_some(data.as_str()),
        ),
        FsStep::Bind {
            source,
            target,
            kind,
            writable,
        } => {
            match kind {
                TargetKind::Dir => ensure_dir(sys, target, 0o755)?,
                TargetKind::File => {
                    if let Some(parent) = target.parent() {
                        ensure_dir(sys, parent, 0o755)?;
                    }
                    sys.touch(target)?;
                }
            }
            sys.mount(Some(source), target, None, MsFlags::MS_BIND, None)?;
            if *writable {
                Ok(())
            } else {
                remount_read_only(sys, target)
            }
        }
        FsStep::Symlink { target, link } => match sys.symlink(target, link) {
            Err(Errno::EEXIST) if sys.file_kind(link) == Ok(FileKind::Symlink) => Ok(()),
            other => other,
        },
        FsStep::File {
            path,
            contents,
            mode,
        } => sys.create_file(path, contents, *mode),
    }
}

/// A bind remount keeps the flags the kernel locked on the source mount.
fn remount_read_only(sys: &dyn Syscall, target: &Path) -> Result<(), Errno> {
    let kept = sys.mount_flags(target)?;
    sys.mount(
        None,
        target,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | kept,
        None,
    )
}

/// `mkdir -p`: existing folders are fine (and keep their mode).
fn ensure_dir(sys: &dyn Syscall, path: &Path, mode: u32) -> Result<(), Errno> {
    let mut partial = PathBuf::from("/");
    let mut components = path.components().skip(1).peekable();
    while let Some(component) = components.next() {
        partial.push(component);
        let this_mode = if components.peek().is_none() {
            mode
        } else {
            0o755
        };
        match sys.mkdir(&partial, this_mode) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Step 3, in the command's process: stdio, umask, no inherited descriptors,
/// exec. Returns only when no candidate could be executed.
pub(crate) fn exec_command(sys: &dyn Syscall, plan: &SetupPlan, output: RawFd) -> StepError {
    if let Err(errno) = sys.redirect_stdio(output) {
        return StepError {
            step: Step::Stdio,
            index: 0,
            errno,
        };
    }
    sys.set_umask(0o022);
    if let Err(errno) = sys.cloexec_from(3) {
        return StepError {
            step: Step::CloseDescriptors,
            index: 0,
            errno,
        };
    }
    let mut reported = Errno::ENOENT;
    for program in &plan.exec_candidates {
        match exec_one(sys, program, plan) {
            // like execvp: keep looking, but report permission problems over absence
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => reported = Errno::EACCES,
            other => {
                reported = other;
                break;
            }
        }
    }
    StepError {
        step: Step::Exec,
        index: 0,
        errno: reported,
    }
}

fn exec_one(sys: &dyn Syscall, program: &CString, plan: &SetupPlan) -> Errno {
    sys.exec(program, &plan.argv, &plan.envp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::{Call, RecordingSyscall};
    use crate::sandbox::plan::{self, PlanInputs};
    use crate::sandbox::spec::{Bind, IdRange, Limits, NetworkMode, RunSpec};

    fn plan_for(spec: &RunSpec, network: NetworkMode) -> SetupPlan {
        let limits = Limits::default();
        plan::build(&PlanInputs {
            spec,
            limits: &limits,
            network,
            id_range: IdRange {
                host_base: 200_000,
                count: 65_536,
            },
            cgroup_procs: vec![
                "/sys/fs/cgroup/sifhub/run-1/cgroup.procs".into(),
                "/sys/fs/cgroup/pids/sifhub/run-1/cgroup.procs".into(),
            ],
            staging: Path::new("/state/run-1"),
            resolv_conf: Some("/etc/resolv.conf".into()),
        })
        .unwrap()
    }

    #[test]
    fn entering_namespaces_maps_ids_before_joining_the_user_namespace() {
        let root = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let spec = RunSpec::in_folder(root.path(), ["/bin/sh"])
            .bind(Bind::read_write(ctx.path(), "/work"));
        let plan = plan_for(&spec, NetworkMode::Slirp);
        let fake = RecordingSyscall::new();
        enter_namespaces(&fake, &plan).unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let ctx = std::fs::canonicalize(ctx.path()).unwrap();
        let map = "0 200000 65536\n".to_string();
        assert_eq!(
            fake.calls(),
            vec![
                Call::ResetSignals,
                Call::NewSession,
                Call::ParentDeathSignal,
                Call::WriteFile(
                    "/sys/fs/cgroup/sifhub/run-1/cgroup.procs".into(),
                    "0".into()
                ),
                Call::WriteFile(
                    "/sys/fs/cgroup/pids/sifhub/run-1/cgroup.procs".into(),
                    "0".into()
                ),
                Call::Unshare(CloneFlags::CLONE_NEWNS),
                Call::Mount {
                    source: None,
                    target: "/".into(),
                    fstype: None,
                    flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    data: None
                },
                Call::SpawnUserNamespace,
                Call::WriteFile("/proc/4242/uid_map".into(), map.clone()),
                Call::WriteFile("/proc/4242/gid_map".into(), map),
                Call::OpenNamespace("/proc/4242/ns/user".into()),
                Call::ReleaseUserNamespace(4242),
                Call::BindIdMapped(root, "/state/run-1/root".into()),
                Call::BindIdMapped(ctx, "/state/run-1/bind-0".into()),
                Call::Setns(CloneFlags::CLONE_NEWUSER),
                Call::SetGroups(vec![]),
                Call::SetGid(0),
                Call::SetUid(0),
                Call::ParentDeathSignal,
                Call::Unshare(
                    CloneFlags::CLONE_NEWNS
                        | CloneFlags::CLONE_NEWPID
                        | CloneFlags::CLONE_NEWUTS
                        | CloneFlags::CLONE_NEWIPC
                        | CloneFlags::CLONE_NEWCGROUP
                        | CloneFlags::CLONE_NEWNET
                ),
            ]
        );
    }

    #[test]
    fn host_network_does_not_unshare_the_network() {
        let root = tempfile::tempdir().unwrap();
        let plan = plan_for(
            &RunSpec::in_folder(root.path(), ["/bin/sh"]),
            NetworkMode::Host,
        );
        let fake = RecordingSyscall::new();
        enter_namespaces(&fake, &plan).unwrap();
        let last = fake.calls().pop().unwrap();
        let Call::Unshare(flags) = last else {
            panic!("{last:?}")
        };
        assert!(!flags.contains(CloneFlags::CLONE_NEWNET));
        assert!(flags.contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP));
    }

    #[test]
    fn a_failing_map_write_still_releases_the_holder_and_names_the_step() {
        let root = tempfile::tempdir().unwrap();
        let plan = plan_for(
            &RunSpec::in_folder(root.path(), ["/bin/sh"]),
            NetworkMode::None,
        );
        let fake = RecordingSyscall::new().failing("/proc/4242/gid_map", Errno::EPERM);
        let err = enter_namespaces(&fake, &plan).unwrap_err();
        assert_eq!(err.step, Step::WriteGidMap);
        assert!(fake.calls().contains(&Call::ReleaseUserNamespace(4242)));
        assert!(!fake.calls().iter().any(|c| matches!(c, Call::Setns(_))));
        let message = err.into_error(&plan).to_string();
        assert_eq!(
            message,
            "sandbox setup failed: write gid_map 0 200000 65536: EPERM: Operation not permitted"
        );
    }

    #[test]
    fn the_filesystem_is_built_after_pivot_root_and_the_old_root_detached_last() {
        let root = tempfile::tempdir().unwrap();
        let spec = RunSpec::in_folder(root.path(), ["/bin/sh"])
            .cwd("/work")
            .hostname("box")
            .read_only_root();
        let plan = plan_for(&spec, NetworkMode::None);
        let fake = RecordingSyscall::new();
        build_filesystem(&fake, &plan).unwrap();
        let calls = fake.calls();
        let index = |wanted: &Call| {
            calls
                .iter()
                .position(|c| c == wanted)
                .unwrap_or_else(|| panic!("{wanted:?} not in {calls:#?}"))
        };
        let rebind = index(&Call::Mount {
            source: Some("/state/run-1/root".into()),
            target: "/state/run-1/root".into(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        });
        let pivot = index(&Call::PivotRoot(
            "/state/run-1/root".into(),
            "/state/run-1/root/.sifhub-oldroot".into(),
        ));
        assert!(rebind < pivot);
        let proc_mount = index(&Call::Mount {
            source: Some("proc".into()),
            target: "/proc".into(),
            fstype: Some("proc".into()),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        });
        let dev_null = index(&Call::Mount {
            source: Some("/.sifhub-oldroot/dev/null".into()),
            target: "/dev/null".into(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        });
        let tmp = index(&Call::Mount {
            source: Some("tmpfs".into()),
            target: "/tmp".into(),
            fstype: Some("tmpfs".into()),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some(format!("mode=1777,size={}", Limits::default().disk)),
        });
        let resolv = index(&Call::Mount {
            source: Some("/.sifhub-oldroot/etc/resolv.conf".into()),
            target: "/etc/resolv.conf".into(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        });
        let resolv_ro = index(&Call::Mount {
            source: None,
            target: "/etc/resolv.conf".into(),
            fstype: None,
            flags: MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
            data: None,
        });
        let detach = index(&Call::UmountDetach("/.sifhub-oldroot".into()));
        let root_ro = index(&Call::Mount {
            source: None,
            target: "/".into(),
            fstype: None,
            flags: MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
            data: None,
        });
        assert!(pivot < proc_mount && proc_mount < dev_null && dev_null < tmp);
        assert!(tmp < resolv && resolv < resolv_ro && resolv_ro < detach && detach < root_ro);
        assert_eq!(calls[0], Call::ParentDeathSignal);
        assert!(calls[..pivot].contains(&Call::NotDumpable));
        assert_eq!(
            &calls[calls.len() - 3..],
            &[
                Call::SetHostname("box".into()),
                Call::LoopbackUp,
                Call::Chdir("/work".into())
            ]
        );
        assert!(calls.contains(&Call::Symlink("/proc/self/fd".into(), "/dev/fd".into())));
        assert!(calls.contains(&Call::Touch("/dev/tty".into())));
    }

    #[test]
    fn a_host_tools_root_is_a_tmpfs_mounted_before_pivot() {
        let build_root = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        let spec = RunSpec::setup_section(build_root.path(), context.path(), ["/bin/sh"]);
        let plan = plan_for(&spec, NetworkMode::None);
        let fake = RecordingSyscall::new();
        build_filesystem(&fake, &plan).unwrap();
        let calls = fake.calls();
        let tmpfs_root = calls
            .iter()
            .position(|c| {
                matches!(c, Call::Mount { target, fstype: Some(t), .. }
                if target == Path::new("/state/run-1/root") && t == "tmpfs")
            })
            .unwrap();
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .unwrap();
        assert!(tmpfs_root < pivot);
        assert!(calls.contains(&Call::Mount {
            source: Some("/.sifhub-oldroot/state/run-1/bind-0".into()),
            target: "/rootfs".into(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        }));
        assert!(calls.contains(&Call::CreateFile("/etc/passwd".into())));
    }

    #[test]
    fn exec_tries_path_candidates_in_order() {
        let root = tempfile::tempdir().unwrap();
        let spec = RunSpec::in_folder(root.path(), ["sh", "-c", "true"]).env("PATH", "/nope:/bin");
        let plan = plan_for(&spec, NetworkMode::None);
        let fake = RecordingSyscall::new();
        let err = exec_command(&fake, &plan, 9);
        assert_eq!(err.errno, Errno::ENOENT);
        let execs: Vec<Call> = fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Exec(_)))
            .collect();
        assert_eq!(
            execs,
            vec![Call::Exec("/nope/sh".into()), Call::Exec("/bin/sh".into())]
        );
        assert_eq!(fake.calls()[0], Call::RedirectStdio(9));
    }
}
