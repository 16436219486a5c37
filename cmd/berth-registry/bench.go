package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/errdefs"
)

// benchPullLayers are the sizes of the bench image's layers: 108 MiB in
// five layers, the largest first as in a base image.
var benchPullLayers = []int64{48 << 20, 32 << 20, 16 << 20, 8 << 20, 4 << 20}

// cmdServeBench is the registry of `berth bench pull`: it starts
// go-containerregistry's registry on 127.0.0.1, its blobs on disk in the
// directory args names, pushes a five-layer image of 108 MiB (gzip) to
// it, prints the image's reference and serves until its standard input
// ends (berth closes it, or exits).
func cmdServeBench(_ string, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want the registry's directory: %w", errdefs.ErrInvalid)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ggcrregistry.New(
		ggcrregistry.Logger(log.New(io.Discard, "", 0)),
		ggcrregistry.WithBlobHandler(ggcrregistry.NewDiskBlobHandler(args[0])),
	)}
	go srv.Serve(l)
	defer srv.Close()
	ref := l.Addr().String() + "/bench/pull:v1"
	if err := pushBenchImage(ref); err != nil {
		return fmt.Errorf("push the bench image: %w", err)
	}
	fmt.Println(ref)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// pushBenchImage pushes an image of random layers (one file each, sizes
// benchPullLayers) to ref.
func pushBenchImage(ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	var adds []mutate.Addendum
	for _, size := range benchPullLayers {
		layer, err := random.Layer(size, types.OCILayer)
		if err != nil {
			return err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	}
	img, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), adds...)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", runtime.GOARCH, v1.Time{Time: time.Now()}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = remote.Write(tag, img, remote.WithContext(ctx))
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the local registry took more than 5 minutes")
	}
	return err
}
