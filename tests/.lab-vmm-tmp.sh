HUSK_VMM_TIMING=1 husk-vmm run --initrd $HUSK_SMOKE_INITRAMFS --vcpus 2 --cmdline "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 tsc=reliable no_timer_check" ; echo rc=$?
