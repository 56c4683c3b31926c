package main

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Settings are what kind's CNI manifest gives the DaemonSet's container.
type Settings struct {
	HostIP     net.IP
	PodSubnets []*net.IPNet
}

// settingsFromEnv checks HOST_IP and POD_SUBNET (comma-separated CIDRs) from the manifest.
func settingsFromEnv(getenv func(string) string) (Settings, error) {
	hostIP := ipOf(strings.TrimSpace(getenv("HOST_IP")))
	if hostIP == nil {
		return Settings{}, fmt.Errorf("HOST_IP %q is not an IP address", getenv("HOST_IP"))
	}
	var subnets []*net.IPNet
	for _, part := range strings.Split(getenv("POD_SUBNET"), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		_, n, err := net.ParseCIDR(part)
		if err != nil {
			return Settings{}, fmt.Errorf("POD_SUBNET: %w", err)
		}
		subnets = append(subnets, n)
	}
	if len(subnets) == 0 {
		return Settings{}, fmt.Errorf("POD_SUBNET %q names no CIDR", getenv("POD_SUBNET"))
	}
	return Settings{HostIP: hostIP, PodSubnets: subnets}, nil
}

// Route sends one pod CIDR of another node to that node.
type Route struct {
	Dst     *net.IPNet
	Gateway net.IP
}

// Plan is what this node needs: its own pod CIDRs (for the CNI configuration) and a route
// for every other node's pod CIDRs.
type Plan struct {
	PodCIDRs []string
	Routes   []Route
}

// planFor finds this node by its InternalIP and derives the plan from every node's
// spec.podCIDRs. Malformed CIDRs and nodes without a usable address are skipped: one bad
// node must not take the network of the others down.
func planFor(nodes []corev1.Node, hostIP net.IP) (Plan, error) {
	var plan Plan
	found := false
	for i := range nodes {
		node := &nodes[i]
		cidrs := podCIDRsOf(node)
		if nodeHasIP(node, hostIP) {
			found = true
			plan.PodCIDRs = cidrs
			continue
		}
		for _, c := range cidrs {
			_, dst, err := net.ParseCIDR(c)
			if err != nil {
				continue
			}
			gw := internalIP(node, dst.IP.To4() != nil)
			if gw == nil {
				continue
			}
			plan.Routes = append(plan.Routes, Route{Dst: dst, Gateway: gw})
		}
	}
	if !found {
		return Plan{}, fmt.Errorf("no node has InternalIP %s", hostIP)
	}
	sort.Slice(plan.Routes, func(i, j int) bool { return plan.Routes[i].Dst.String() < plan.Routes[j].Dst.String() })
	return plan, nil
}

func podCIDRsOf(node *corev1.Node) []string {
	if len(node.Spec.PodCIDRs) > 0 {
		return append([]string(nil), node.Spec.PodCIDRs...)
	}
	if node.Spec.PodCIDR != "" {
		return []string{node.Spec.PodCIDR}
	}
	return nil
}

func nodeHasIP(node *corev1.Node, ip net.IP) bool {
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && ipOf(a.Address).Equal(ip) {
			return true
		}
	}
	return false
}

func internalIP(node *corev1.Node, v4 bool) net.IP {
	for _, a := range node.Status.Addresses {
		ip := ipOf(a.Address)
		if a.Type == corev1.NodeInternalIP && ip != nil && (ip.To4() != nil) == v4 {
			return ip
		}
	}
	return nil
}

// renderCNIConfig is the configuration kindnetd writes: ptp with host-local over the node's
// pod CIDRs (one range each, a default route per family), then portmap for hostPorts.
func renderCNIConfig(podCIDRs []string, mtu int) ([]byte, error) {
	type subnet struct {
		Subnet string `json:"subnet"`
	}
	type route struct {
		Dst string `json:"dst"`
	}
	ranges := [][]subnet{}
	routes := []route{}
	for _, c := range podCIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("pod CIDR %q: %w", c, err)
		}
		ranges = append(ranges, []subnet{{Subnet: n.String()}})
		if n.IP.To4() != nil {
			routes = append(routes, route{Dst: "0.0.0.0/0"})
		} else {
			routes = append(routes, route{Dst: "::/0"})
		}
	}
	if len(ranges) == 0 {
		return nil, fmt.Errorf("no pod CIDR")
	}
	ptp := map[string]any{
		"type":   "ptp",
		"ipMasq": false,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": "/run/cni-ipam-state",
			"routes":  routes,
			"ranges":  ranges,
		},
	}
	if mtu > 0 {
		ptp["mtu"] = mtu
	}
	conf := map[string]any{
		"cniVersion": "0.3.1",
		"name":       "kindnet",
		"plugins": []any{
			ptp,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
