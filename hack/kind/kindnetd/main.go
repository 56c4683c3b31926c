// Command kindnetd is the CNI agent of crontask's offline kind node image.
//
// kind's own kindnetd lives in a nested Go module (sigs.k8s.io/kind/images/kindnetd) that the
// Go module proxy does not serve, so it cannot be built here from its sources. This program
// keeps the contract kind's default CNI manifest (pkg/build/nodeimage/const_cni.go) relies on,
// and nothing more: it runs as that manifest's DaemonSet (host network, NET_ADMIN + NET_RAW,
// env HOST_IP / POD_IP / POD_SUBNET, /etc/cni/net.d mounted), and on every node it
//
//   - writes /etc/cni/net.d/10-kindnet.conflist (ptp + host-local over the node's
//     spec.podCIDRs, portmap), the configuration kindnetd writes, so the kubelet's pods get
//     addresses and the node turns Ready;
//   - routes every other node's pod CIDRs via that node's InternalIP;
//   - masquerades traffic from the pod subnets to anything outside them (an nftables table of
//     its own), so pods reach addresses beyond the cluster (the engine's network) and replies
//     find their way back.
//
// What kindnetd also does and this does not: NetworkPolicy enforcement, its DNS cache and
// NAT64. See hack/cluster/README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	cniConfigPath = "/etc/cni/net.d/10-kindnet.conflist"
	resyncPeriod  = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	settings, err := settingsFromEnv(os.Getenv)
	if err != nil {
		logger.Error("bad environment", "err", err)
		os.Exit(2)
	}
	config, err := rest.InClusterConfig()
	if err != nil {
		logger.Error("no in-cluster configuration", "err", err)
		os.Exit(1)
	}
	config.Timeout = 10 * time.Second
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		logger.Error("cannot build a client", "err", err)
		os.Exit(1)
	}
	logger.Info("kindnetd (crontask) starting", "hostIP", settings.HostIP, "podSubnets", settings.PodSubnets)
	for {
		if err := syncOnce(context.Background(), client, settings, logger); err != nil {
			logger.Warn("sync failed; retrying", "err", err)
			time.Sleep(retryPeriod)
			continue
		}
		time.Sleep(resyncPeriod)
	}
}

// syncOnce reads the nodes once and brings the CNI configuration, the routes and the
// masquerade rules of this node in line with them. Every step is idempotent.
func syncOnce(ctx context.Context, client kubernetes.Interface, s Settings, logger *slog.Logger) error {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	plan, err := planFor(list.Items, s.HostIP)
	if err != nil {
		return err
	}
	if err := ensureMasquerade(s.PodSubnets); err != nil {
		return fmt.Errorf("masquerade rules: %w", err)
	}
	for _, r := range plan.Routes {
		if err := ensureRoute(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dst, r.Gateway, err)
		}
	}
	if len(plan.PodCIDRs) == 0 {
		return fmt.Errorf("node with InternalIP %s has no pod CIDR yet", s.HostIP)
	}
	conf, err := renderCNIConfig(plan.PodCIDRs, linkMTU(s.HostIP))
	if err != nil {
		return err
	}
	changed, err := writeIfChanged(cniConfigPath, conf)
	if err != nil {
		return fmt.Errorf("writing %s: %w", cniConfigPath, err)
	}
	if changed {
		logger.Info("wrote CNI configuration", "path", cniConfigPath, "podCIDRs", plan.PodCIDRs)
	}
	return nil
}

// writeIfChanged replaces path atomically (rename in the same directory) when its content
// differs, so the runtime never reads a half-written configuration.
func writeIfChanged(path string, content []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(content) {
		return false, nil
	}
	tmp, err := os.CreateTemp(dirOf(path), ".kindnet-*.tmp")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(tmp.Name(), path)
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i]
		}
	}
	return "."
}

// ipOf is net.ParseIP that keeps 4-byte form for IPv4 (what netlink and nftables want).
func ipOf(s string) net.IP {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}
