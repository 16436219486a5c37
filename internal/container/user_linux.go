package container

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
	"github.com/berth-dev/berth/internal/userdb"
)

// credential is the workload's resolved identity.
type credential struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
	Home     string   // from /etc/passwd, for a HOME the spec does not set
	// NoSetGroups: the user namespace forbids setgroups (its setgroups
	// file says deny); the groups are left as they are.
	NoSetGroups bool
}

// checkSetgroups adapts c to a user namespace whose setgroups is denied
// (one made by an unprivileged process): as runc does, the image's group
// memberships are dropped silently, but groups the spec names
// explicitly are an error.
func checkSetgroups(c *credential, u specs.User) error {
	b, err := os.ReadFile("/proc/self/setgroups")
	if err != nil || strings.TrimSpace(string(b)) != "deny" {
		return nil
	}
	if len(u.AdditionalGids) > 0 {
		return fmt.Errorf("additional groups %v: setgroups is denied in the container's user namespace: %w", u.AdditionalGids, errdefs.ErrInvalid)
	}
	c.Groups, c.NoSetGroups = nil, true
	return nil
}

// resolveUser resolves the process's user inside the container (after
// pivot_root, so /etc is the image's). With User.Username empty the
// numeric IDs are used as they are. Otherwise Username is Docker's -u
// form, "USER[:GROUP]", each a name or a number; names must be listed in
// the image's /etc/passwd and /etc/group. Supplementary groups are the
// /etc/group memberships of a named user plus User.AdditionalGids.
func resolveUser(u specs.User, db userdb.Files) (credential, error) {
	passwd, group := db.Passwd, db.Group
	c := credential{UID: u.UID, GID: u.GID, Home: "/"}
	name := ""
	if u.Username != "" {
		userPart, groupPart, hasGroup := strings.Cut(u.Username, ":")
		if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
			c.UID, c.GID = uint32(id), 0
			if f, ok := userdb.Lookup(passwd, 2, userPart); ok {
				name, c.GID, c.Home = f[0], userdb.ID(f[3]), f[5]
			}
		} else {
			f, ok := userdb.Lookup(passwd, 0, userPart)
			if !ok {
				return c, fmt.Errorf("user %q: no such user in the image's /etc/passwd: %w", userPart, errdefs.ErrInvalid)
			}
			name, c.UID, c.GID, c.Home = f[0], userdb.ID(f[2]), userdb.ID(f[3]), f[5]
		}
		if hasGroup {
			if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
				c.GID = uint32(id)
			} else {
				f, ok := userdb.Lookup(group, 0, groupPart)
				if !ok {
					return c, fmt.Errorf("group %q: no such group in the image's /etc/group: %w", groupPart, errdefs.ErrInvalid)
				}
				c.GID = userdb.ID(f[2])
			}
		}
	} else if f, ok := userdb.Lookup(passwd, 2, strconv.FormatUint(uint64(c.UID), 10)); ok {
		name, c.Home = f[0], f[5]
	}
	if name != "" && u.Username != "" {
		c.Groups = userdb.Groups(group, name, c.GID)
	}
	c.Groups = append(c.Groups, u.AdditionalGids...)
	if c.Home == "" {
		c.Home = "/"
	}
	return c, nil
}

// readUserFiles reads /etc/passwd and /etc/group of the current root (the
// container's, so its symlinks are followed): a missing file reads as
// empty, one that is no regular file or is too large is an error, and
// nothing at those paths is opened unless it is a regular file.
func readUserFiles() (userdb.Files, error) {
	return userdb.Load(func(path string, limit int64) ([]byte, error) {
		return regfile.ReadFile(unix.AT_FDCWD, path, 0, limit)
	}, "container's")
}

// withHome adds HOME to env when it has none, as Docker does.
func withHome(env []string, home string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "HOME=") {
			return env
		}
	}
	return append(append([]string{}, env...), "HOME="+home)
}

// envPath is PATH from env, or the usual default.
func envPath(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
