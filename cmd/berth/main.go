// Command berth runs OCI images as containers or virtual machines.
//
// There is no daemon: each verb does its work and exits; a small monitor
// process owns each detached instance. The verbs live one per file.
package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/regcli"
	"github.com/berth-dev/berth/internal/vm"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one verb of the command line. Its flags are declared where
// it parses them, in its own file; help, completion and the reference in
// docs/cli.md read them from there (see flagsOf), so there is one source.
type command struct {
	name    string
	aliases []string
	args    string // the operands in the usage line, after [OPTIONS]
	short   string // one line for the list of commands
	long    string // one paragraph for the command's help
	run     func(g *globals, args []string) error
	subs    []command // subcommands (`image import`); run is then nil
	hidden  bool      // internal verbs: no help, no completion

	// What shell completion offers for an operand.
	operand   operandKind
	firstOnly bool     // only the first operand is one (run IMAGE CMD...)
	words     []string // the choices when operand is aWord
}

// operandKind is what an operand of a command names, for completion.
type operandKind int

const (
	noOperand  operandKind = iota
	anImage                // an image's name or ID
	anInstance             // an instance's name or ID
	aRunning               // a running instance's name or ID
	aFile                  // a path
	aWord                  // one of the command's words
	aCommand               // a command (and a subcommand) of berth
	aNetwork               // a network's name
)

func commands() []command {
	return []command{
		{name: "run", args: "IMAGE [COMMAND [ARG...]]", short: "run an instance of an image",
			long: "Runs COMMAND (by default the image's entrypoint and command) in a new instance of IMAGE: " +
				"a Linux container, or with --vm a QEMU virtual machine with its own kernel. " +
				"In the foreground berth's exit status is the command's; with -d berth prints the instance's ID " +
				"and a monitor process keeps the instance's output in a bounded log (see berth logs), starts it " +
				"again as --restart says (Docker's policies and back-off; a restart needs -d) and runs its health " +
				"check (the image's HEALTHCHECK or --health-cmd; ps and inspect show its health). " +
				"Flags stop at IMAGE: what follows it is the command.",
			run: cmdRun, operand: anImage, firstOnly: true},
		{name: "exec", args: "INSTANCE COMMAND [ARG...]", short: "run a command in a running instance",
			long: "Runs COMMAND inside a running instance, container or VM, with the instance's environment " +
				"and user unless the flags say otherwise. berth's exit status is the command's. " +
				"Flags stop at INSTANCE: what follows it is the command.",
			run: cmdExec, operand: aRunning, firstOnly: true},
		{name: "ps", short: "list instances",
			long: "Lists running instances, or with -a every instance berth still has a record of, " +
				"newest first, with its image, command, age, status, isolation (container or vm) and name. " +
				"STATUS says, as Docker's does, \"up 3 seconds (healthy)\" for a running instance and its health, " +
				"\"restarting (1) 2 seconds ago\" for one its restart policy starts again after its exit (1), and " +
				"\"exited (0) 5 minutes ago\".",
			run: cmdPs},
		{name: "logs", args: "INSTANCE", short: "show a detached instance's output",
			long: "Prints the output a detached instance (run -d) has written to its log: standard output " +
				"to standard output, standard error to standard error. With -f it keeps printing until the instance ends.",
			run: cmdLogs, operand: anInstance},
		{name: "stop", args: "INSTANCE...", short: "stop instances: SIGTERM, then SIGKILL after a grace period",
			long: "Sends SIGTERM to each instance's main process (a VM's guest command), waits the grace period " +
				"for it to end and then sends SIGKILL. A stopped instance stays stopped: no restart policy starts it " +
				"again (a restart under way is called off) until berth start or restart.",
			run: cmdStop, operand: aRunning},
		{name: "kill", args: "INSTANCE...", short: "send a signal to instances",
			long: "Sends a signal, SIGKILL unless -s names another, to each instance's main process. KILL, TERM, INT " +
				"and QUIT count as the user's stop, as with berth stop: no restart policy undoes it.",
			run: cmdKill, operand: aRunning},
		{name: "start", args: "INSTANCE...", short: "start created or stopped instances again, detached",
			long: "Starts each created or stopped instance again under a new monitor, detached as with run -d, and " +
				"waits until its workload runs: the same instance (ID, name, record, root file system of a container), " +
				"new processes, its network attached again. It forgets a stop by the user and sets the restart count " +
				"back to 0. An instance that runs, or that its restart policy is restarting, is left as it is. " +
				"With --boot and no INSTANCE it starts what a host's boot should bring back, as dockerd does when it " +
				"starts: every instance whose restart policy is always, or unless-stopped if the user had not stopped it " +
				"(scripts/berth-restart.service runs it at boot).",
			run: cmdStart, operand: anInstance},
		{name: "restart", args: "INSTANCE...", short: "stop instances, then start them again",
			long: "Stops each instance as berth stop does (SIGTERM, SIGKILL after -t seconds) and starts it again " +
				"as berth start does, detached under a new monitor.",
			run: cmdRestart, operand: anInstance},
		{name: "rm", args: "INSTANCE...", short: "remove stopped instances",
			long: "Removes each stopped instance: its record, log, cgroup and root file system. " +
				"A running instance is refused unless -f, which kills it first.",
			run: cmdRm, operand: anInstance},
		{name: "pause", args: "INSTANCE...", short: "freeze every process of instances",
			long: "Freezes each running instance: a container's processes through its cgroup's freezer, " +
				"a VM's virtual CPUs through QEMU. A paused instance takes no exec; stop and kill thaw it after signalling.",
			run: cmdPause, operand: aRunning},
		{name: "unpause", args: "INSTANCE...", short: "thaw paused instances",
			long: "Lets each paused instance run again.",
			run:  cmdUnpause, operand: anInstance},
		{name: "stats", args: "[INSTANCE...]", short: "show instances' resource usage",
			long: "Shows CPU, memory, network and block I/O and process counts of the instances named, or of every " +
				"running instance, refreshed every second until interrupted (--no-stream: once). A VM's figures are " +
				"its guest workload's, read through its agent, with QEMU's own host memory beside them.",
			run: cmdStats, operand: aRunning},
		{name: "top", args: "INSTANCE", short: "show the processes of an instance",
			long: "Lists the processes of a running instance: the host's processes of a container, the guest's " +
				"processes of a VM's workload.",
			run: cmdTop, operand: aRunning},
		{name: "inspect", args: "INSTANCE...", short: "show instances' details as JSON",
			long: "Prints the records of the instances as a JSON array: configuration, status, " +
				"process IDs, exit code, isolation and resources. Instances that are not found make it fail " +
				"after the others are printed.",
			run: cmdInspect, operand: anInstance},
		{name: "pull", args: "IMAGE", short: "pull an image from a registry",
			long: "Pulls IMAGE (NAME[:TAG] or NAME@DIGEST; a short name is Docker Hub's docker.io/library/NAME:latest) " +
				"from its registry into the store, with the credentials of docker login (DOCKER_CONFIG or " +
				"~/.docker/config.json, credential helpers). From a multi-platform image it takes this host's " +
				"platform unless --platform names another. Layers download in parallel, are verified while they " +
				"stream, and enter the store only once the whole image is verified and unpacked. Plain HTTP and " +
				"unverified TLS are used only for registries on localhost or loopback addresses and for insecure " +
				"registries (--insecure-registry, BERTH_INSECURE_REGISTRIES, ROOT/registries.json).",
			run: registryVerb("pull", new(regcli.Pull)), operand: anImage},
		{name: "push", args: "IMAGE", short: "push an image to a registry",
			long: "Pushes IMAGE (a name in the store, NAME[:TAG]) to its registry with the credentials of berth login " +
				"or docker login, printing a line per layer as Docker does. Blobs stream from the store; those the " +
				"registry has already, in this repository or (mounted) in another repository of the image's names there, " +
				"are not sent again. Plain HTTP and unverified TLS only for loopback and insecure registries.",
			run: registryVerb("push", new(regcli.Push)), operand: anImage},
		{name: "login", args: "[REGISTRY]", short: "log in to a registry",
			long: "Checks a user name and password against REGISTRY (default Docker Hub) and stores them as Docker " +
				"does, in DOCKER_CONFIG/config.json or ~/.docker/config.json (base64 in \"auths\", mode 0600; through " +
				"the credential helper that credsStore or credHelpers name). Without -u or a password it asks on the terminal.",
			run: registryVerb("login", new(regcli.Login))},
		{name: "logout", args: "[REGISTRY]", short: "log out from a registry",
			long: "Removes the credentials of REGISTRY (default Docker Hub) from Docker's config file or its credential helper.",
			run:  registryVerb("logout", new(regcli.Logout))},
		{name: "image", short: "manage images",
			long: "Manages the images in berth's content store: images pulled from registries (berth pull) " +
				"and OCI layouts or docker-save archives made elsewhere (berth image import, berth image load).",
			subs: []command{
				{name: "import", args: "PATH", short: "import an OCI layout (directory or tar) or a docker-save tar",
					long: "Imports the image at PATH, an OCI image layout directory or tar, or a tar written by " +
						"docker save, into the store, and prints its names and ID.",
					run: cmdImageImport, operand: aFile},
				{name: "save", args: "IMAGE...", short: "write images to a docker-archive or OCI archive",
					long: "Writes the images named to FILE (-o) or standard output as a tar: by default a docker-archive " +
						"as docker save writes it (which docker load, podman load, skopeo and berth image load read), with " +
						"--format oci an OCI archive. Blobs stream from the store as they are.",
					run: cmdImageSave, operand: anImage},
				{name: "load", short: "load images from a docker-archive or OCI archive",
					long: "Reads a docker-archive (docker save, skopeo, berth image save) or an OCI archive, plain or " +
						"gzip-compressed, from FILE (-i) or standard input, and imports every image in it as image import " +
						"does: every digest verified, every layer checked, nothing stored of an image that fails. " +
						"Prints \"Loaded image: NAME\" for each name.",
					run: cmdImageLoad},
				{name: "ls", aliases: []string{"list"}, short: "list images",
					long: "Lists the images in the store with their names, IDs, ages and sizes.",
					run:  cmdImageLs},
				{name: "rm", aliases: []string{"remove"}, args: "IMAGE...", short: "remove images",
					long: "Removes each IMAGE: a name removes that name (the image goes with its last name), an ID the image with all its names. Layers no image uses any more are then collected.",
					run:  cmdImageRm, operand: anImage},
				{name: "tag", args: "SOURCE TARGET", short: "give an image another name",
					long: "Gives the image SOURCE (a name or an ID) the name TARGET as well; TARGET moves from any image that had it.",
					run:  cmdImageTag, operand: anImage},
				{name: "inspect", args: "IMAGE", short: "show an image's details as JSON",
					long: "Prints an image's record as JSON: names, ID, configuration, layers and size.",
					run:  cmdImageInspect, operand: anImage},
			}},
		{name: "network", short: "manage networks",
			long: "Manages berth's networks. Each is a bridge on the host with NAT out; the default network, bridge, " +
				"is made on first use, and run attaches instances to it unless --network says otherwise. On a user " +
				"network instances reach each other by name and alias through a resolver on the network's gateway.",
			subs: []command{
				{name: "create", args: "NAME", short: "create a network",
					long: "Records a network NAME with the subnet --subnet gives (by default the next free /24 of 10.214.0.0/16) " +
						"and prints its ID. A subnet that overlaps another network's or a route of the host's is refused. " +
						"Its bridge is made when the first instance attaches.",
					run: cmdNetworkCreate, operand: aWord},
				{name: "ls", aliases: []string{"list"}, short: "list networks",
					long: "Lists the networks with their IDs, drivers, subnets, gateways and bridges.",
					run:  cmdNetworkLs},
				{name: "inspect", args: "NETWORK...", short: "show networks' details as JSON",
					long: "Prints each network's record and the running instances on it, with their addresses and MACs, as a JSON array.",
					run:  cmdNetworkInspect, operand: aNetwork},
				{name: "rm", aliases: []string{"remove"}, args: "NETWORK...", short: "remove networks",
					long: "Removes each network, its bridge and its firewall rules. A network that an instance (running or not) names is refused; so is the default network.",
					run:  cmdNetworkRm, operand: aNetwork},
				{name: "connect", args: "NETWORK INSTANCE", short: "attach a created or stopped instance to a network",
					long: "Attaches INSTANCE, created or stopped, to NETWORK (with --ip and --alias as run's --ip and --network-alias): " +
						"its next start puts it there. berth attaches an instance to one network at a time.",
					run: cmdNetworkConnect, operand: aNetwork, firstOnly: true},
				{name: "disconnect", args: "NETWORK INSTANCE", short: "take a created or stopped instance off a network",
					long: "Takes INSTANCE, created or stopped, off NETWORK: its next start has loopback only.",
					run:  cmdNetworkDisconnect, operand: aNetwork, firstOnly: true},
				{name: "prune", short: "remove every network no instance names",
					long: "Removes every user network that no instance's record names, and prints their names.",
					run:  cmdNetworkPrune},
			}},
		{name: "port", args: "INSTANCE [PORT[/PROTO]]", short: "list an instance's published ports",
			long: "Prints the ports a running instance publishes, each as PORT/PROTO -> HOSTIP:HOSTPORT, or the host's side of PORT alone.",
			run:  cmdPort, operand: anInstance, firstOnly: true},
		{name: "up", short: "start a compose project's services and keep them at their replica counts",
			long: "Reads the compose file (-f; by default compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml " +
				"in the current directory) and starts its services in dependency order on the project's networks, each with " +
				"its replicas (deploy.replicas, --scale SERVICE=N), as containers or, with runtime: berth-vm or " +
				"x-berth-isolation: vm, as VMs. A supervisor process per project, with no daemon, keeps the replicas at " +
				"their count, replaces replicas that died, rolls out a changed configuration one replica at a time, and " +
				"balances each published port across the service's ready replicas. With -d up returns once every " +
				"service is up; without it, it prints the replicas' output until interrupted, then takes the project down.",
			run: cmdUp},
		{name: "down", short: "take a compose project down: its supervisor, instances and networks",
			long: "Stops the project's supervisor, removes every instance of the project and its networks, and forgets the project.",
			run:  cmdDown},
		{name: "scale", args: "SERVICE=N...", short: "change the replica counts of a compose project's services",
			long: "Sets each SERVICE's replica count and waits until the project's supervisor has started or removed replicas to match.",
			run:  cmdScale, operand: aWord},
		{name: superviseVerb, run: cmdSupervise, hidden: true},
		{name: "info", short: "show host facts: cgroup mode, root, accelerator, peers",
			long: "Prints the facts about this host that decide how berth runs instances: kernel, cgroup mode, " +
				"whether berth runs as root, its data root, the VM accelerator and transport, the guest kernel, " +
				"VM templates, and which peer runtimes are installed.",
			run: cmdInfo},
		{name: "bench", args: "[SCENARIO...]", short: "measure berth against runc, QEMU, containerd and Docker",
			long: "Runs benchmark scenarios with the image --image names and prints each figure's median beside its spread: " +
				"start (berth run --rm against runc run), memory (the memory a detached instance's monitor and init hold), " +
				"vm (a VM's start from its template against QEMU restoring a saved guest, and a cold boot against a plain boot), " +
				"compare (the image as a container against as a VM), ctr (containerd's ctr with berth-runtime against runc), " +
				"exec (berth-runtime exec against runc exec) and pull (berth pull of a 108 MiB five-layer image from a local " +
				"registry against skopeo copy and, through a containerd the bench starts, ctr image pull, with berth's peak " +
				"RSS) and network (in a network namespace of the bench's own: run --rm on the default bridge against docker run --rm on Docker's, through a dockerd the bench starts, and " +
				"against --network none; then TCP throughput and round-trip time from the host's loopback, through -p on " +
				"127.0.0.1 (berth's proxy, docker-proxy) and on a non-loopback address (DNAT), container to container on a " +
				"user network and on Docker's bridge, and to a VM; each sample streams 32 MiB, timed until the receiver has " +
				"counted it, and makes 200 round trips of 64 bytes, each timed, with a probe that is berth's own binary " +
				"mounted into each instance) and scale (in the same kind of namespace: a busybox httpd service that answers " +
				"with its hostname, scaled with berth scale from 0 to --replicas containers and to --vm-replicas VMs until " +
				"that many distinct hostnames answer through the one balanced port, and back to 0, against docker-compose " +
				"up --scale on the bench's dockerd, whose replicas each take a port of a range; then the PSS of each idle " +
				"replica, and requests per second through the balanced port against a single replica, with 1000 GETs over " +
				"new connections from 4 clients per sample). Without SCENARIO it runs start and memory.",
			run: cmdBench, operand: aWord, words: []string{"start", "memory", "vm", "compare", "ctr", "exec", "pull", "network", "scale"}},
		{name: "version", short: "show berth's version and the versions of the interfaces it speaks",
			long: "Prints berth's version and the version of each interface between its parts: the OCI runtime " +
				"and image specifications it implements, the guest agent's protocol, the container stage protocol " +
				"between berth and berth-init, and the Go release it was built with.",
			run: cmdVersion},
		{name: "completion", args: "bash|zsh", short: "print a shell completion script",
			long: "Prints a script that makes bash or zsh complete berth's commands, flags, instance names and " +
				"IDs, and image names. Load it with `source <(berth completion bash)` in ~/.bashrc, or " +
				"`source <(berth completion zsh)` in ~/.zshrc.",
			run: cmdCompletion, operand: aWord, words: []string{"bash", "zsh"}},
		{name: "docs", args: "markdown|man", short: "print the command-line reference",
			long: "Prints the reference of every command and flag, as Markdown (docs/cli.md is this output) " +
				"or as a man page in roff.",
			run: cmdDocs, operand: aWord, words: []string{"markdown", "man"}},
		{name: "help", args: "[COMMAND [SUBCOMMAND]]", short: "show the help of berth or of a command",
			long: "Prints the help of berth, or of COMMAND: what it does, its usage and every flag with its meaning and default.",
			run:  cmdHelp, operand: aCommand},
		{name: monitorVerb, run: cmdMonitor, hidden: true},
		{name: completeVerb, run: cmdComplete, hidden: true},
		{name: netprobeVerb, run: cmdNetprobe, hidden: true},
	}
}

func main() {
	// Re-exec stages of the container engine come first and never return.
	if container.RunStage(os.Args) {
		return
	}
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	g, rest, err := parseGlobals(args)
	if _, ok := err.(*helpRequest); ok {
		return printHelp(os.Stdout, nil)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth: %v\n", err)
		return 125
	}
	if len(rest) == 0 {
		writeMainHelp(os.Stderr)
		return 125
	}
	path, args, err := findCommand(rest)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 125
	}
	c := path[len(path)-1]
	if c.subs != nil {
		return printHelp(os.Stdout, path) // `image --help`
	}
	if c.name == "run" {
		catchEarlySignals()
	}
	// An instance whose owner died and whose restart policy wants it
	// back gets a new monitor from whichever command reconciles it.
	lifecycle.Spawner = reviver(g.root)
	err = c.run(g, args)
	if err == nil {
		return 0
	}
	if _, ok := err.(*helpRequest); ok && !c.hidden {
		return printHelp(os.Stdout, path)
	}
	var st exitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	fmt.Fprintf(os.Stderr, "berth %s: %s\n", path[0].name, oneLine(err)) // "berth image: ..."
	return exitCode(err)
}

// findCommand finds the command args name, down to a subcommand, and
// returns the path to it and its arguments. The path ends at a command
// with subcommands only when its help was asked for (`image --help`).
// Its errors are whole lines for the user.
func findCommand(args []string) ([]command, []string, error) {
	var path []command
	list := commands()
	for {
		c, ok := lookupCommand(list, args[0])
		if !ok && len(path) == 0 {
			return nil, nil, fmt.Errorf("berth: unknown command %q (see berth --help)", args[0])
		}
		if !ok {
			return nil, nil, fmt.Errorf("berth %s: unknown subcommand %q: want %s", commandName(path), args[0], subcommandNames(path[len(path)-1]))
		}
		path, args = append(path, c), args[1:]
		switch {
		case c.subs == nil:
			return path, args, nil
		case len(args) == 0:
			return nil, nil, fmt.Errorf("berth %s: want a subcommand: %s", commandName(path), subcommandNames(c))
		case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
			return path, nil, nil
		}
		list = c.subs
	}
}

func lookupCommand(list []command, name string) (command, bool) {
	for _, c := range list {
		if c.name == name || slices.Contains(c.aliases, name) {
			return c, true
		}
	}
	return command{}, false
}

// commandName is "image import" for the path to that subcommand.
func commandName(path []command) string {
	var names []string
	for _, c := range path {
		names = append(names, c.name)
	}
	return strings.Join(names, " ")
}

func subcommandNames(c command) string {
	var names []string
	for _, s := range c.subs {
		names = append(names, s.name)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// exitStatus is returned by verbs whose own exit status is the workload's.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCode maps an error to the contract's exit codes: 126 when the
// command could not be invoked, 127 when it was not found, 125 for berth's
// own failures.
func exitCode(err error) int {
	var ee *container.ExecError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var se *vm.StartError
	if errors.As(err, &se) && se.Code >= 125 {
		return se.Code
	}
	return 125
}

// codedError is an error that already knows its exit code (a VM exec's
// 126 or 127 reported by the instance's owner).
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// oneLine keeps an error to a single line.
func oneLine(err error) string { return errdefs.OneLine(err) }
