package runtime

import (
	"fmt"
	"io"
	"net"
	"os"

	"github.com/berth-dev/berth/internal/container"
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

// CopyTerminal relays a terminal's master to stdio (for run and exec in
// the foreground without a console socket). The returned function waits
// for the output to drain, then closes the master.
func CopyTerminal(master *os.File, stdio container.Stdio) func() {
	done := make(chan struct{})
	go func() {
		var out io.Writer = io.Discard
		if stdio.Stdout != nil {
			out = stdio.Stdout
		}
		io.Copy(out, master) // ends with EIO once every slave is closed
		close(done)
	}()
	if stdio.Stdin != nil {
		go io.Copy(master, stdio.Stdin)
	}
	return func() {
		<-done
		master.Close()
	}
}
