package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Seed implements agent.Seeder: it sets the guest's clock to the host's
// and feeds the host's entropy to the kernel's RNG, so a guest restored
// from a template goes on with neither the template's clock nor its RNG
// state. A cold boot gains too: the RTC only counts whole seconds.
func (g *guest) Seed(hostTime time.Time, entropy []byte) error {
	// The host's time is as old as its hello: over virtio-serial a cold
	// boot's hello waits in the port for the whole boot, and its time is
	// then behind the RTC's. Both are early, so the later one is right,
	// and the clock only moves forward (a restored guest's clock is the
	// template's, minutes or days behind).
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
		return fmt.Errorf("read CLOCK_REALTIME: %w", err)
	}
	if !hostTime.IsZero() && hostTime.UnixNano() > now.Nano() {
		ts := unix.NsecToTimespec(hostTime.UnixNano())
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return fmt.Errorf("set CLOCK_REALTIME: %w", err)
		}
	}
	if err := addEntropy(entropy); err != nil {
		return err
	}
	tracef("clock and entropy from the host")
	return nil
}

// addEntropy mixes b into the kernel's input pool, credits it with
// 8 bits a byte (the host's bytes come from crypto/rand) and has the
// crng reseed from the pool at once, rather than at its next periodic
// reseed. Both ioctls need CAP_SYS_ADMIN (random(4)).
func addEntropy(b []byte) error {
	if len(b) == 0 {
		return errors.New("add entropy: none given")
	}
	fd, err := unix.Open("/dev/urandom", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("add entropy: open /dev/urandom: %w", err)
	}
	defer unix.Close(fd)
	if err := ioctlBytes(fd, unix.RNDADDENTROPY, randPoolInfo(b)); err != nil {
		return fmt.Errorf("add entropy: ioctl RNDADDENTROPY: %w", err)
	}
	// RNDRESEEDCRNG is Linux 4.17 and later; an older kernel rejects it
	// and reseeds on its own schedule.
	err = unix.IoctlSetInt(fd, unix.RNDRESEEDCRNG, 0)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("add entropy: ioctl RNDRESEEDCRNG: %w", err)
	}
	return nil
}

// randPoolInfo lays out the kernel's struct rand_pool_info for b:
// int entropy_count (bits credited), int buf_size (bytes), then the
// bytes; native byte order.
func randPoolInfo(b []byte) []byte {
	p := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(p[0:4], uint32(8*len(b)))
	binary.NativeEndian.PutUint32(p[4:8], uint32(len(b)))
	copy(p[8:], b)
	return p
}
