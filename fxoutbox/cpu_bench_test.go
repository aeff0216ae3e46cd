package fxoutbox_test

import (
	"bufio"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuMeter reads where the CPU of a benchmark's phase went, on Linux:
// this Go process's (getrusage), the PostgreSQL backends serving this
// process's connections (their schedstat run time; another process's
// backends do not count), and nats-server's (every thread's). On another
// system, or where /proc cannot be read, it reads zeros.
type cpuMeter struct {
	db   *sql.DB
	nats int // nats-server's pid, 0: not found
}

// cpuSample is the CPU time each part had used by some instant.
type cpuSample struct {
	goCPU, pg, nats time.Duration
	pgPids          map[int]time.Duration
}

func newCPUMeter(db *sql.DB) *cpuMeter {
	m := &cpuMeter{db: db}
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, comm := range dirs {
		if b, err := os.ReadFile(comm); err == nil && strings.TrimSpace(string(b)) == "nats-server" {
			m.nats, _ = strconv.Atoi(filepath.Base(filepath.Dir(comm)))
			break
		}
	}
	return m
}

// sample reads the parts' CPU time now.
func (m *cpuMeter) sample() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.goCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if m.nats != 0 {
		s.nats = taskRunTime(m.nats)
	}
	s.pgPids = map[int]time.Duration{}
	for _, pid := range m.backends() {
		t := runTime("/proc/" + strconv.Itoa(pid) + "/schedstat")
		s.pgPids[pid] = t
		s.pg += t
	}
	return s
}

// since is the CPU each part used from s0 to s; a backend that started
// in between counts from nothing, one that ended is not counted.
func (s cpuSample) since(s0 cpuSample) cpuSample {
	d := cpuSample{goCPU: s.goCPU - s0.goCPU, nats: s.nats - s0.nats}
	for pid, t := range s.pgPids {
		d.pg += t - s0.pgPids[pid]
	}
	return d
}

// add is s plus d.
func (s cpuSample) add(d cpuSample) cpuSample {
	return cpuSample{goCPU: s.goCPU + d.goCPU, pg: s.pg + d.pg, nats: s.nats + d.nats}
}

// backends is the pids of the PostgreSQL backends this process's
// connections to port 5432 are served by.
func (m *cpuMeter) backends() []int {
	ports := ownPortsTo(5432)
	if len(ports) == 0 {
		return nil
	}
	list := make([]string, len(ports))
	for i, p := range ports {
		list[i] = strconv.Itoa(p)
	}
	rows, err := m.db.Query("SELECT pid FROM pg_stat_activity WHERE client_port IN (" + strings.Join(list, ",") + ")")
	if err != nil {
		return nil
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ownPortsTo is the local ports of this process's TCP connections to
// remote port.
func ownPortsTo(remote int) []int {
	inodes := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local, rem := fields[1], fields[2]
			rp, err1 := strconv.ParseInt(rem[strings.LastIndexByte(rem, ':')+1:], 16, 32)
			lp, err2 := strconv.ParseInt(local[strings.LastIndexByte(local, ':')+1:], 16, 32)
			if err1 == nil && err2 == nil && int(rp) == remote {
				ports = append(ports, int(lp))
			}
		}
		_ = f.Close()
	}
	return ports
}

// taskRunTime is the run time of every thread of process pid.
func taskRunTime(pid int) time.Duration {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var sum time.Duration
	for _, t := range tasks {
		sum += runTime(t)
	}
	return sum
}

// runTime reads the run time, in ns, a schedstat file starts with.
func runTime(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(n)
}
