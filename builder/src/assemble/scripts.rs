//! The fixed files of the `.singularity.d` layout. They are the runtime
//! interface apptainer expects inside every image (`apptainer run` executes
//! `/.singularity.d/actions/run`, which sources `env/*.sh` in name order), so
//! they behave exactly as apptainer's own; the text is ours.

/// Sources every environment script, in name order.
const SOURCE_ENV: &str = "for script in /.singularity.d/env/*.sh; do\n    if [ -f \"$script\" ]; then\n        . \"$script\"\n    fi\ndone\n";

pub fn action_exec() -> String {
    format!("#!/bin/sh\n\n{SOURCE_ENV}\nexec \"$@\"\n")
}

pub fn action_run() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}
if test -n \"${{SINGULARITY_APPNAME:-}}\"; then
    if test -x \"/scif/apps/${{SINGULARITY_APPNAME:-}}/scif/runscript\"; then
        exec \"/scif/apps/${{SINGULARITY_APPNAME:-}}/scif/runscript\" \"$@\"
    elif test -x \"/scif/apps/singularity/scif/runscript\"; then
        exec \"/scif/apps/singularity/scif/runscript\" \"$@\"
    fi
    echo \"No Apptainer runscript for contained app: ${{SINGULARITY_APPNAME:-}}\"
    exit 1
elif test -x \"/.singularity.d/runscript\"; then
    exec \"/.singularity.d/runscript\" \"$@\"
fi
echo \"No Apptainer runscript found, executing /bin/sh\"
exec /bin/sh \"$@\"
"
    )
}

pub fn action_shell() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}
if test -n \"$SINGULARITY_SHELL\" -a -x \"$SINGULARITY_SHELL\"; then
    exec $SINGULARITY_SHELL \"$@\"
    echo \"ERROR: Failed running shell as defined by '\\$SINGULARITY_SHELL'\" 1>&2
    exit 1
elif test -x /bin/bash; then
    SHELL=/bin/bash
    PS1=\"Apptainer $APPTAINER_NAME:\\\\w> \"
    export SHELL PS1
    exec /bin/bash --norc \"$@\"
elif test -x /bin/sh; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh \"$@\"
fi
echo \"ERROR: /bin/sh does not exist in container\" 1>&2
exit 1
"
    )
}

pub fn action_start() -> String {
    format!(
        "#!/bin/sh\n\n# Resume the instance's init, which waits stopped until we run.\nkill -CONT 1\n\n{SOURCE_ENV}
if test -x \"/.singularity.d/startscript\"; then
    exec \"/.singularity.d/startscript\"
fi
"
    )
}

pub fn action_test() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}
if test -n \"${{SINGULARITY_APPNAME:-}}\"; then
    if test -x \"/scif/apps/${{SINGULARITY_APPNAME:-}}/scif/test\"; then
        exec \"/scif/apps/${{SINGULARITY_APPNAME:-}}/scif/test\" \"$@\"
    elif test -x \"/scif/apps/singularity/scif/test\"; then
        exec \"/scif/apps/singularity/scif/test\" \"$@\"
    fi
    echo \"No tests for contained app: ${{SINGULARITY_APPNAME:-}}\"
    exit 1
elif test -x \"/.singularity.d/test\"; then
    exec \"/.singularity.d/test\" \"$@\"
fi
echo \"No test found in container, executing /bin/sh -c true\"
exec /bin/sh -c true
"
    )
}

pub const ENV_01_BASE: &str = "#!/bin/sh\n";
pub const ENV_90_ENVIRONMENT: &str = "#!/bin/sh\n# Custom environment shell code should follow\n\n";

pub const ENV_95_APPS: &str = r#"#!/bin/sh
# SCIF apps: with SINGULARITY_APPNAME set, put the app first on the paths
# and source its own environment.
if test -n "${SINGULARITY_APPNAME:-}"; then
    export SINGULARITY_APPNAME
    if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/"; then
        SCIF_APPS="/scif/apps"
        SCIF_APPROOT="/scif/apps/${SINGULARITY_APPNAME:-}"
        export SCIF_APPROOT SCIF_APPS
        PATH="/scif/apps/${SINGULARITY_APPNAME:-}:/scif/apps/singularity:$PATH"
        if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/bin"; then
            PATH="/scif/apps/${SINGULARITY_APPNAME:-}/bin:$PATH"
        elif test -d "/scif/apps/singularity/bin"; then
            PATH="/scif/apps/singularity/bin:$PATH"
        fi
        if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/lib"; then
            LD_LIBRARY_PATH="/scif/apps/${SINGULARITY_APPNAME:-}/lib:$LD_LIBRARY_PATH"
            export LD_LIBRARY_PATH
        elif test -d "/scif/apps/singularity/lib"; then
            LD_LIBRARY_PATH="/scif/apps/singularity/lib:$LD_LIBRARY_PATH"
            export LD_LIBRARY_PATH
        fi
        for env in 01-base.sh 90-environment.sh; do
            if [ -f "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/$env" ]; then
                . "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/$env"
            elif [ -f "/scif/apps/singularity/scif/env/$env" ]; then
                . "/scif/apps/singularity/scif/env/$env" "$@"
            fi
        done
        export PATH
    else
        echo "Could not locate the container application: ${SINGULARITY_APPNAME}"
        exit 1
    fi
fi
"#;

pub const ENV_99_BASE: &str = r#"#!/bin/sh
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
if [ -z "${PS1:-}" ]; then
    PS1="Apptainer> "
fi
export LD_LIBRARY_PATH PS1
"#;

pub const ENV_99_RUNTIMEVARS: &str = r#"#!/bin/sh
# PATH changes asked for at run time (--env PREPEND_PATH and friends).
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="${SING_USER_DEFINED_PATH}"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
"#;

pub const DEFAULT_RUNSCRIPT: &str =
    "#!/bin/sh\n\necho \"There is no runscript defined for this container\\n\";\n";
pub const DEFAULT_STARTSCRIPT: &str = "#!/bin/sh\n";
