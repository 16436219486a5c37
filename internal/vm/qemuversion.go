package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// Version is a QEMU release, major and minor.
type Version struct{ Major, Minor int }

// AtLeast reports whether v is major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

var versionLine = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)`)

// parseQEMUVersion reads the release from `qemu-system-x86_64 -version`.
func parseQEMUVersion(out string) (Version, error) {
	m := versionLine.FindStringSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("no \"QEMU emulator version\" in %q", oneLine([]byte(out)))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return Version{major, minor}, nil
}

// qemuVersion is the release of the QEMU binary at bin. Asking QEMU costs
// a process, so the answer is kept in cacheDir/qemu-version beside the
// binary's size and modification time, and asked again only when the
// binary changes (an upgrade).
func qemuVersion(bin, cacheDir string) (Version, error) {
	st, err := os.Stat(bin)
	if err != nil {
		return Version{}, fmt.Errorf("qemu %s: %w", bin, err)
	}
	key := fmt.Sprintf("%s %d %d", bin, st.Size(), st.ModTime().UnixNano())
	cache := filepath.Join(cacheDir, "qemu-version")
	if b, err := os.ReadFile(cache); err == nil {
		if k, v, ok := strings.Cut(strings.TrimSpace(string(b)), "\n"); ok && k == key {
			if ver, err := parseQEMUVersion("QEMU emulator version " + v); err == nil {
				return ver, nil
			}
		}
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("qemu %s -version: %w", bin, err)
	}
	ver, err := parseQEMUVersion(string(out))
	if err != nil {
		return Version{}, fmt.Errorf("qemu %s: %w", bin, err)
	}
	if os.MkdirAll(cacheDir, 0o700) == nil {
		_ = atomicfile.Write(cache, []byte(key+"\n"+ver.String()+"\n"), 0o600)
	}
	return ver, nil
}
