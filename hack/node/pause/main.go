// Command pause holds a pod's namespaces open: the first container of every pod on
// the local node (containerd's sandbox_image). It sleeps until SIGINT or SIGTERM,
// and reaps the zombies it inherits when it is PID 1 of a shared process namespace
// (shareProcessNamespace: true), like Kubernetes' own pause.c.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is the image tag hack/cluster.sh gives it.
const version = "1.0"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("modelworks pause", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not running as PID 1")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
