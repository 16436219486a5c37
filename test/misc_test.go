package test

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestInfo(t *testing.T) {
	var info map[string]any
	if err := json.Unmarshal([]byte(must(t, "info", "--format", "json")), &info); err != nil {
		t.Fatal(err)
	}
	mode, _ := info["cgroup_mode"].(string)
	if mode != "v1" && mode != "v2" && mode != "hybrid" {
		t.Fatalf("cgroup_mode %q", mode)
	}
	if info["root"] != true || info["data_root"] != berthRoot {
		t.Fatalf("info: %v", info)
	}
	if out := must(t, "info"); !strings.Contains(out, "cgroup mode:") {
		t.Fatalf("info: %s", out)
	}
}

func TestLogsFollow(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done")
	r := berth(t, "logs", "-f", id)
	if r.code != 0 || r.stdout != "line 1\nline 2\nline 3\n" {
		t.Fatalf("logs -f: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestEnvFromHostAndImageByID(t *testing.T) {
	img := busybox(t)
	var imgs []map[string]any
	if err := json.Unmarshal([]byte(must(t, "image", "ls", "--format", "json")), &imgs); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, i := range imgs {
		if names, _ := i["names"].([]any); len(names) > 0 && names[0] == img+":latest" {
			id, _ = i["id"].(string)
		}
	}
	if !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("no ID for %s in %v", img, imgs)
	}
	t.Setenv("BERTH_TEST_VALUE", "from the host")
	r := berth(t, "run", "--rm", "-e", "BERTH_TEST_VALUE", "-e", "UNSET_ON_HOST_X", id[len("sha256:"):len("sha256:")+12],
		"sh", "-c", `echo "$BERTH_TEST_VALUE|${UNSET_ON_HOST_X-unset}"`)
	if r.code != 0 || r.stdout != "from the host|unset\n" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestNameConflict(t *testing.T) {
	img := busybox(t)
	detach(t, "--name", "taken", img, "sleep", "100")
	r := berth(t, "run", "--rm", "--name", "taken", img, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "taken") {
		t.Fatalf("second instance named taken: exit %d stderr %q", r.code, r.stderr)
	}
}
