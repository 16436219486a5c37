package main

import (
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/project"
)

// healthy reports whether an instance's health check, if it has one,
// passes.
func healthy(in *instance.Instance) bool { return true }

// serviceLifeArgs are run's flags for a service's restart policy and
// health check.
func serviceLifeArgs(svc project.Service) []string { return nil }
