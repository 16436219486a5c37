package main

import (
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/project"
)

// healthy reports whether an instance's health check, if it has one,
// passes: a replica with a check is ready only once healthy.
func healthy(in *instance.Instance) bool {
	if in.Healthcheck == nil {
		return true
	}
	return in.Health != nil && in.Health.Status == health.Healthy
}

// serviceLifeArgs are run's flags for a service's restart policy and
// health check.
func serviceLifeArgs(svc project.Service) []string {
	var args []string
	if svc.Restart != "" && svc.Restart != "no" {
		args = append(args, "--restart", svc.Restart)
	}
	h := svc.Health
	if h == nil {
		return args
	}
	if h.Disable || (len(h.Test) > 0 && h.Test[0] == "NONE") {
		return append(args, "--no-healthcheck")
	}
	if len(h.Test) > 1 {
		cmd := strings.Join(h.Test[1:], " ")
		if h.Test[0] == "CMD" {
			cmd = shellQuote(h.Test[1:])
		}
		args = append(args, "--health-cmd", cmd)
	}
	if h.Interval > 0 {
		args = append(args, "--health-interval", h.Interval.String())
	}
	if h.Timeout > 0 {
		args = append(args, "--health-timeout", h.Timeout.String())
	}
	if h.StartPeriod > 0 {
		args = append(args, "--health-start-period", h.StartPeriod.String())
	}
	if h.Retries > 0 {
		args = append(args, "--health-retries", strconv.Itoa(h.Retries))
	}
	return args
}

// shellQuote joins argv into one /bin/sh command line that runs it.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
