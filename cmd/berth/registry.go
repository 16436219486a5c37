package main

import (
	"flag"

	"github.com/berth-dev/berth/internal/registry"
)

// insecureFlag declares --insecure-registry on a verb that talks to
// registries; it adds to BERTH_INSECURE_REGISTRIES and ROOT/registries.json.
func insecureFlag(fs *flag.FlagSet) *listFlag {
	l := &listFlag{}
	fs.Var(l, "insecure-registry", "a registry `HOST[:PORT]` to reach over plain HTTP or unverified TLS (repeatable; also BERTH_INSECURE_REGISTRIES and ROOT/registries.json)")
	return l
}

// registryOptions are the options of a pull, push or login: the insecure
// registries of flags, the environment and the data root's file.
func registryOptions(g *globals, insecure *listFlag) (registry.Options, error) {
	var flags []string
	if insecure != nil {
		flags = *insecure
	}
	list, err := registry.InsecureRegistries(g.root, flags)
	if err != nil {
		return registry.Options{}, err
	}
	return registry.Options{Insecure: list}, nil
}
