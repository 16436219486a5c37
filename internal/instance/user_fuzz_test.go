package instance

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/userdb"
)

// FuzzResolveUser: any -u value against any passwd and group content.
// Resolution never panics, errors are one line, and a numeric user is
// that UID whatever the files say.
func FuzzResolveUser(f *testing.F) {
	for _, spec := range []string{"", "0", "app", "app:staff", "1000:50", "root:0", "nobody", ":", "app:", ":app", "4294967295", "4294967296"} {
		f.Add(spec, []byte(testPasswd), []byte(testGroup))
	}
	f.Add("x", []byte("x:x:1:2:c:d\n"), []byte("g:x:3\n"))
	f.Fuzz(func(t *testing.T, spec string, passwd, group []byte) {
		files := func(path string, limit int64) ([]byte, error) {
			switch path {
			case userdb.PasswdPath:
				return passwd, nil
			case userdb.GroupPath:
				return group, nil
			}
			return nil, os.ErrNotExist
		}
		u, err := ResolveUser(spec, files)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		userPart, _, _ := strings.Cut(spec, ":")
		if id, perr := strconv.ParseUint(userPart, 10, 32); perr == nil && uint64(u.UID) != id {
			t.Fatalf("ResolveUser(%q).UID = %d", spec, u.UID)
		}
		if u.Home == "" {
			t.Fatalf("ResolveUser(%q): empty home", spec)
		}
	})
}
