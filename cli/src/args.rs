//! The command line: runc's commands, flags and global options, as
//! Docker, Podman and containerd pass them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "husk",
    about = "Run OCI containers, each in its own microVM (runc-compatible CLI)",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub g: Global,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Directory for container state
    #[arg(long, global = true, default_value = "/run/husk")]
    pub root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for compatibility; husk's cgroups live in the guest
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for compatibility; checkpointing is not supported
    #[arg(long, global = true)]
    pub criu: Option<String>,
    /// Accepted for compatibility (true, false or auto)
    #[arg(long, global = true)]
    pub rootless: Option<String>,
    /// Print the version
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container (boots its microVM; the process waits for start)
    Create(CreateArgs),
    /// Start the process of a created container
    Start(IdArg),
    /// Create and start a container, wait for it, then delete it
    Run(RunArgs),
    /// Print a container's state as OCI state JSON
    State(IdArg),
    /// Send a signal to the container's process (default SIGTERM)
    Kill(KillArgs),
    /// Delete a stopped container (--force: kill it first)
    Delete(DeleteArgs),
    /// Run another process in a running container
    Exec(ExecArgs),
    /// List the container's host processes
    Ps(PsArgs),
    /// List containers
    List(ListArgs),
    /// Freeze every process of a container
    Pause(IdArg),
    /// Thaw a paused container
    Resume(IdArg),
    /// Change a container's resource limits
    Update(UpdateArgs),
    /// Stream a container's events (or print its stats once with --stats)
    Events(EventsArgs),
    /// Print the runtime's features as JSON
    Features,
    /// Write a default config.json into the bundle
    Spec(SpecArgs),
    /// Not supported: a microVM cannot be checkpointed with CRIU
    #[command(disable_help_flag = true)]
    Checkpoint(Rest),
    /// Not supported: a microVM cannot be restored with CRIU
    #[command(disable_help_flag = true)]
    Restore(Rest),
    /// Run husk-bench (boot, container start, overhead, density)
    #[command(disable_help_flag = true)]
    Bench(Rest),
    #[command(name = "__monitor", hide = true)]
    Monitor(MonitorArgs),
    #[command(name = "__exec", hide = true)]
    ExecMonitor(ExecMonitorArgs),
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: String,
}

#[derive(Args, Debug)]
pub struct Rest {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory (default: the current directory)
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// Unix socket to send the pty master to (process.terminal)
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the monitor's pid to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Accepted for compatibility
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for compatibility
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted for compatibility (extra descriptors are not passed into a VM)
    #[arg(long)]
    pub preserve_fds: Option<u32>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container runs
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process of the container
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    pub signal: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub tty: bool,
    /// UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// process.json (an OCI process object)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub preserve_fds: Option<u32>,
    #[arg(long)]
    pub cgroup: Option<String>,
    #[arg(long)]
    pub ignore_paused: bool,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short, long, default_value = "table")]
    pub format: String,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(short, long, default_value = "table")]
    pub format: String,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// linux.resources JSON file ("-": stdin)
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_share: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    #[arg(long)]
    pub memory_swap: Option<String>,
    #[arg(long)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[arg(long)]
    pub stats: bool,
    /// Accepted for compatibility (events are pushed, not polled)
    #[arg(long, default_value = "5s")]
    pub interval: String,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    pub id: String,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub start: bool,
    #[arg(long, default_value_t = 3)]
    pub ready_fd: i32,
}

#[derive(Args, Debug)]
pub struct ExecMonitorArgs {
    pub id: String,
    pub exec_id: String,
    #[arg(long)]
    pub process: PathBuf,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub ready_fd: i32,
}
