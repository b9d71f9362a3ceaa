// CoreDNS with only the plugins a cluster DNS of the end-to-end test needs: names of Services
// and pods in cluster.local from the API server, nothing forwarded anywhere. Importing these few
// plugins instead of CoreDNS's full set (clouds, etcd, tracing, ...) keeps the build small.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
