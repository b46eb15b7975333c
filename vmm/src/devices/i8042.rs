//! A minimal i8042 keyboard controller at 0x60 (data) / 0x64 (command).
//!
//! Its job is the CPU reset line: the guest runs with `reboot=k`, so a reboot
//! (and, with `panic=-1`, a panic) pulses it, which ends the VM. The reset
//! command goes through vm-superio's `I8042Device`. vm-superio's device reads
//! as 0 forever though, and Linux's i8042 driver polls for up to 500 ms for
//! the reply to "read control register" at boot; so this wrapper also answers
//! the controller commands the driver uses (read/write CTR, self tests, output
//! port) and acknowledges keyboard commands, raising IRQ 1 for keyboard
//! bytes when the guest enabled it. Nothing here can grow without bound.

use std::collections::VecDeque;

use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

const DATA: u64 = 0;
/// The command/status port, as an offset from 0x60.
const COMMAND_OFFSET: u8 = 4;
const COMMAND: u64 = COMMAND_OFFSET as u64;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;

const CTR_KBD_INT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OUTBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
/// Output port bit 0 is the (active low) CPU reset line.
const OUTP_RESET_LINE: u8 = 0x01;
const OUTBUF_MAX: usize = 16;

/// Calls the VMM's reset hook from vm-superio's trigger interface.
struct ResetHook(Box<dyn Fn() + Send>);

impl Trigger for ResetHook {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)();
        Ok(())
    }
}

pub struct I8042 {
    reset: I8042Device<ResetHook>,
    kbd_irq: Option<EventFd>,
    ctr: u8,
    outp: u8,
    /// Controller command waiting for its data byte.
    pending: Option<u8>,
    out: VecDeque<u8>,
    last_was_command: bool,
}

impl I8042 {
    /// `on_reset` runs on the vCPU thread that pulsed the reset line.
    pub fn new(on_reset: Box<dyn Fn() + Send>, kbd_irq: Option<EventFd>) -> Self {
        I8042 {
            reset: I8042Device::new(ResetHook(on_reset)),
            kbd_irq,
            ctr: CTR_KBD_INT | CTR_SYS | CTR_XLATE,
            outp: OUTP_RESET_LINE,
            pending: None,
            out: VecDeque::with_capacity(OUTBUF_MAX),
            last_was_command: false,
        }
    }

    fn reset_cpu(&mut self) {
        let _ = self.reset.write(COMMAND_OFFSET, CMD_RESET_CPU);
    }

    fn push(&mut self, byte: u8) {
        if self.out.len() < OUTBUF_MAX {
            self.out.push_back(byte);
        }
    }

    fn push_kbd(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.push(*b);
        }
        if self.ctr & CTR_KBD_INT != 0 {
            if let Some(irq) = &self.kbd_irq {
                let _ = irq.write(1);
            }
        }
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST | CMD_KBD_TEST => self.push(0x00),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_OUTP => self.push(self.outp),
            CMD_RESET_CPU => self.reset_cpu(),
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            Some(CMD_WRITE_OUTP) => {
                self.outp = byte;
                if byte & OUTP_RESET_LINE == 0 {
                    self.reset_cpu();
                }
            }
            Some(CMD_WRITE_KBD_OUTBUF) => self.push_kbd(&[byte]),
            Some(CMD_WRITE_AUX_OUTBUF) => self.push(byte),
            // No mouse behind the aux port.
            Some(_) => {}
            // A keyboard command: reset answers ACK + self-test passed,
            // identify answers a standard MF2 keyboard, echo echoes.
            None => match byte {
                0xff => self.push_kbd(&[KBD_ACK, 0xaa]),
                0xf2 => self.push_kbd(&[KBD_ACK, 0xab, 0x83]),
                0xee => self.push_kbd(&[0xee]),
                _ => self.push_kbd(&[KBD_ACK]),
            },
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYS;
        if !self.out.is_empty() {
            s |= STATUS_OBF;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match (offset, data.len()) {
            (DATA, 1) => self.out.pop_front().unwrap_or(0),
            (COMMAND, 1) => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (DATA, [b]) => {
                self.last_was_command = false;
                self.data(*b);
            }
            (COMMAND, [b]) => {
                self.last_was_command = true;
                self.command(*b);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn dev() -> (I8042, Arc<AtomicUsize>, EventFd) {
        let resets = Arc::new(AtomicUsize::new(0));
        let r = resets.clone();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let d = I8042::new(
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            Some(irq.try_clone().unwrap()),
        );
        (d, resets, irq)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_triggers_reset() {
        let (mut d, resets, _) = dev();
        assert_eq!(rd(&mut d, COMMAND) & 0x02, 0, "input buffer always empty");
        d.write(COMMAND, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        // Output port write with the reset line low also resets.
        d.write(COMMAND, &[CMD_WRITE_OUTP]);
        d.write(DATA, &[0x00]);
        assert_eq!(resets.load(Ordering::SeqCst), 2);
        // Other commands do not.
        d.write(COMMAND, &[0xfd]);
        d.write(DATA, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn ctr_round_trip_like_linux_init() {
        let (mut d, _, _) = dev();
        assert_eq!(rd(&mut d, COMMAND) & STATUS_OBF, 0);
        d.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, COMMAND) & STATUS_OBF, STATUS_OBF);
        let ctr = rd(&mut d, DATA);
        assert_eq!(ctr, CTR_KBD_INT | CTR_SYS | CTR_XLATE);
        assert_eq!(rd(&mut d, COMMAND) & STATUS_OBF, 0);
        d.write(COMMAND, &[CMD_WRITE_CTR]);
        d.write(DATA, &[0x45]);
        d.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, DATA), 0x45);
        d.write(COMMAND, &[CMD_SELF_TEST]);
        assert_eq!(rd(&mut d, DATA), 0x55);
        d.write(COMMAND, &[CMD_KBD_TEST]);
        assert_eq!(rd(&mut d, DATA), 0x00);
    }

    #[test]
    fn keyboard_commands_are_acked_with_irq() {
        let (mut d, _, irq) = dev();
        d.write(DATA, &[0xf2]);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(
            [rd(&mut d, DATA), rd(&mut d, DATA), rd(&mut d, DATA)],
            [0xfa, 0xab, 0x83]
        );
        // Interrupt disabled in the CTR: no IRQ.
        d.write(COMMAND, &[CMD_WRITE_CTR]);
        d.write(DATA, &[0]);
        d.write(DATA, &[0xf4]);
        assert!(irq.read().is_err(), "no interrupt pending");
        assert_eq!(rd(&mut d, DATA), 0xfa);
    }

    #[test]
    fn hostile_guest_cannot_grow_the_buffer() {
        let (mut d, _, _) = dev();
        for _ in 0..100_000 {
            d.write(COMMAND, &[CMD_SELF_TEST]);
        }
        assert_eq!(d.out.len(), OUTBUF_MAX);
        let mut wide = [0xffu8; 4];
        d.read(COMMAND, &mut wide);
        assert_eq!(wide, [0; 4]);
        d.write(COMMAND, &[0xfe, 0xfe]);
        d.write(3, &[0xfe]);
        d.read(u64::MAX, &mut wide);
    }
}
