package main

import (
	"context"
	"encoding/json"
	"os"
	"time"
)

// stateJSON is the OCI state with runc's extra fields.
type stateJSON struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Owner       string            `json:"owner"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// cmdState: print the container's OCI state as JSON.
func cmdState(_ context.Context, g *globals, args []string) error {
	id, err := oneID(newFlags("state"), args)
	if err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	s, err := st.Load(id)
	if err != nil {
		return err
	}
	oci := s.OCI()
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(stateJSON{
		OCIVersion: oci.Version, ID: oci.ID, Pid: oci.Pid, Status: string(oci.Status),
		Bundle: oci.Bundle, Rootfs: s.Rootfs, Created: s.Created, Owner: s.Owner,
		Annotations: oci.Annotations,
	})
}
