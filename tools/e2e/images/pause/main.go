// The pod sandbox ("pause") process of the real node: holds the pod's namespaces, reaps
// orphaned children, and exits on SIGTERM or SIGINT. It stands in for registry.k8s.io/pause,
// which cannot be pulled here; containerd's sandbox_image points at it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
