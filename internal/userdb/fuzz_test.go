package userdb

import (
	"slices"
	"strings"
	"testing"
)

func seedFiles(f *testing.F, add func(data string)) {
	for _, s := range []string{debianPasswd, debianGroup, busyboxPasswd, busyboxGroup, "", "\n", "#\n", ":::\n", "::::::\n", "a:b:c:d:e:f:g:h\n", "x\r\ny:x:1:\n"} {
		add(s)
	}
}

// FuzzLookup: any file content, field and value; an entry found has seven
// fields and holds the value where asked.
func FuzzLookup(f *testing.F) {
	seedFiles(f, func(data string) {
		f.Add([]byte(data), 0, "root")
		f.Add([]byte(data), 2, "0")
	})
	f.Fuzz(func(t *testing.T, data []byte, idx int, val string) {
		e, ok := Lookup(data, idx, val)
		if !ok {
			return
		}
		if len(e) != 7 || e[idx] != val {
			t.Fatalf("Lookup(%d, %q) = %q", idx, val, e)
		}
		for _, field := range e[:6] {
			if strings.ContainsAny(field, ":\n") {
				t.Fatalf("field %q holds a separator", field)
			}
		}
	})
}

// FuzzGroups: any group file, user and primary group; the primary group is
// never among the supplementary ones.
func FuzzGroups(f *testing.F) {
	seedFiles(f, func(data string) {
		f.Add([]byte(data), "app", uint32(1000))
		f.Add([]byte(data), "root", uint32(0))
	})
	f.Fuzz(func(t *testing.T, data []byte, user string, primary uint32) {
		if slices.Contains(Groups(data, user, primary), primary) {
			t.Fatalf("Groups(%q, %d) lists the primary group", user, primary)
		}
	})
}
