package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, ip string, cidrs ...string) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: cidrs},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalIP, Address: ip},
		}},
	}
}

func TestSettingsFromEnvRefusesGarbage(t *testing.T) {
	env := map[string]string{"HOST_IP": "10.202.0.2", "POD_SUBNET": "10.244.0.0/16, fd00:10:244::/56"}
	s, err := settingsFromEnv(func(k string) string { return env[k] })
	if err != nil || len(s.PodSubnets) != 2 || !s.HostIP.Equal(net.ParseIP("10.202.0.2")) {
		t.Fatalf("good env refused: %v %+v", err, s)
	}
	for _, bad := range []map[string]string{
		{"HOST_IP": "", "POD_SUBNET": "10.244.0.0/16"},
		{"HOST_IP": "kind-control-plane", "POD_SUBNET": "10.244.0.0/16"},
		{"HOST_IP": "10.202.0.2", "POD_SUBNET": ""},
		{"HOST_IP": "10.202.0.2", "POD_SUBNET": "10.244.0.0/33"},
	} {
		if _, err := settingsFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

func TestPlanRoutesOtherNodesAndSkipsBadOnes(t *testing.T) {
	nodes := []corev1.Node{
		node("cp", "10.202.0.2", "10.244.0.0/24"),
		node("w1", "10.202.0.3", "10.244.1.0/24"),
		node("w2", "not-an-ip", "10.244.2.0/24"),
		node("w3", "10.202.0.5", "garbage"),
	}
	plan, err := planFor(nodes, net.ParseIP("10.202.0.2").To4())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(plan.PodCIDRs, ",") != "10.244.0.0/24" {
		t.Errorf("own pod CIDRs: %v", plan.PodCIDRs)
	}
	if len(plan.Routes) != 1 || plan.Routes[0].Dst.String() != "10.244.1.0/24" ||
		!plan.Routes[0].Gateway.Equal(net.ParseIP("10.202.0.3")) {
		t.Errorf("routes: %+v", plan.Routes)
	}
	if _, err := planFor(nodes, net.ParseIP("10.202.0.99")); err == nil {
		t.Error("a node that is not in the list must be an error")
	}
}

func TestRenderCNIConfigIsKindnetsShape(t *testing.T) {
	out, err := renderCNIConfig([]string{"10.244.0.0/24"}, 1500)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(out, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != "kindnet" || len(conf.Plugins) != 2 || conf.Plugins[0]["type"] != "ptp" ||
		conf.Plugins[1]["type"] != "portmap" || conf.Plugins[0]["mtu"].(float64) != 1500 {
		t.Errorf("unexpected configuration: %s", out)
	}
	if !strings.Contains(string(out), `"subnet": "10.244.0.0/24"`) {
		t.Errorf("range missing: %s", out)
	}
	if _, err := renderCNIConfig([]string{"nope"}, 0); err == nil {
		t.Error("a malformed CIDR must be refused")
	}
	if _, err := renderCNIConfig(nil, 0); err == nil {
		t.Error("no CIDR must be refused")
	}
}
