package runtime

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// SendConsole hands a terminal's master to whoever listens on the console
// socket (runc's protocol: one message on a unix stream socket, the
// terminal's name as data and the master as SCM_RIGHTS). The caller keeps
// and closes its copy.
func SendConsole(socket string, master *os.File) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return fmt.Errorf("console socket %s: %w", socket, err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	name := master.Name()
	if name == "" {
		name = "/dev/ptmx"
	}
	if _, _, err := uc.WriteMsgUnix([]byte(name), unix.UnixRights(int(master.Fd())), nil); err != nil {
		return fmt.Errorf("console socket %s: send the terminal: %w", socket, err)
	}
	return nil
}
