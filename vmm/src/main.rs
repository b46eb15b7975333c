fn main() {
    // Taken first: `husk-vmm smoke` reports the time from here to the agent's
    // answer.
    let t0 = std::time::Instant::now();
    std::process::exit(husk_vmm::cli::main(t0));
}
