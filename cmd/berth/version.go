package main

import (
	"fmt"
	"runtime"

	imagespec "github.com/opencontainers/image-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
)

// versions is what `berth version` reports: berth's own version and the
// version of each interface between its parts and the world.
type versions struct {
	Version       string `json:"version"`
	RuntimeSpec   string `json:"oci_runtime_spec"` // what berth-runtime implements
	ImageSpec     string `json:"oci_image_spec"`   // what image import reads
	AgentProtocol int    `json:"agent_protocol"`   // host <-> guest agent
	StageProtocol string `json:"stage_protocol"`   // berth <-> berth-init
	GoVersion     string `json:"go_version"`
	Platform      string `json:"platform"`
}

func cmdVersion(g *globals, args []string) error {
	fs := newFlags("version")
	format := fs.String("format", "", "output format: json")
	if err := parse(fs, args); err != nil {
		return err
	}
	v := versions{
		Version:       version,
		RuntimeSpec:   specs.Version,
		ImageSpec:     imagespec.Version,
		AgentProtocol: agent.Version,
		StageProtocol: container.StageProtocol,
		GoVersion:     runtime.Version(),
		Platform:      runtime.GOOS + "/" + runtime.GOARCH,
	}
	switch *format {
	case "json":
		return printJSON(v)
	case "":
	default:
		return fmt.Errorf("--format %q: want json: %w", *format, errdefs.ErrInvalid)
	}
	fmt.Printf("berth:             %s\n", v.Version)
	fmt.Printf("OCI runtime spec:  %s (berth-runtime)\n", v.RuntimeSpec)
	fmt.Printf("OCI image spec:    %s (image import)\n", v.ImageSpec)
	fmt.Printf("agent protocol:    %d (berth and the guest agent)\n", v.AgentProtocol)
	fmt.Printf("stage protocol:    %s (berth and berth-init)\n", v.StageProtocol)
	fmt.Printf("go:                %s %s\n", v.GoVersion, v.Platform)
	return nil
}
