package main

import (
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

// masqTable is this agent's own nftables table; it never touches anyone else's rules.
const masqTable = "kindnet-crontask-masq"

func ensureRoute(r Route) error {
	return netlink.RouteReplace(&netlink.Route{Dst: r.Dst, Gw: r.Gateway})
}

// linkMTU is the MTU of the interface holding ip (0 when unknown: the plugin's default).
func linkMTU(ip net.IP) int {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0
			}
			return link.Attrs().MTU
		}
	}
	return 0
}

// ensureMasquerade replaces the agent's table in one transaction: in a postrouting NAT chain,
// traffic to a pod subnet is left alone and traffic from a pod subnet to anywhere else is
// masqueraded (kindnetd's ip-masq behaviour). One table per address family.
func ensureMasquerade(subnets []*net.IPNet) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	for _, family := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		var mine []*net.IPNet
		for _, s := range subnets {
			if (s.IP.To4() != nil) == (family == nftables.TableFamilyIPv4) {
				mine = append(mine, s)
			}
		}
		table := &nftables.Table{Family: family, Name: masqTable}
		// add-then-delete makes the delete succeed whether or not the table existed
		conn.AddTable(table)
		conn.DelTable(table)
		if len(mine) == 0 {
			continue
		}
		conn.AddTable(table)
		chain := conn.AddChain(&nftables.Chain{
			Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		for _, s := range mine {
			conn.AddRule(&nftables.Rule{Table: table, Chain: chain,
				Exprs: append(matchAddress(s, false), &expr.Verdict{Kind: expr.VerdictReturn})})
		}
		for _, s := range mine {
			conn.AddRule(&nftables.Rule{Table: table, Chain: chain,
				Exprs: append(matchAddress(s, true), &expr.Masq{})})
		}
	}
	return conn.Flush()
}

// matchAddress matches the packet's source (or destination) address against subnet.
func matchAddress(subnet *net.IPNet, source bool) []expr.Any {
	var offset, length uint32
	ip := subnet.IP.To4()
	if ip != nil {
		offset, length = 16, 4 // IPv4 header: saddr at 12, daddr at 16
		if source {
			offset = 12
		}
	} else {
		ip = subnet.IP.To16()
		offset, length = 24, 16 // IPv6 header: saddr at 8, daddr at 24
		if source {
			offset = 8
		}
	}
	mask := []byte(subnet.Mask)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: length, Mask: mask, Xor: make([]byte, length)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.Mask(subnet.Mask)},
	}
}
