//! husk-agent: the guest agent, PID 1 of the microVM's initramfs. The
//! work is in the library (`lib.rs`); see [`husk_agent::cli`].

fn main() -> std::process::ExitCode {
    husk_agent::cli::main()
}
