package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// childProc is a load-generator child process (idle and storm run their
// connections in them) that reports one JSON value a line on stdout.
type childProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser // the child's stdin
	done chan struct{}  // closed once its output is read and it exited
	err  error          // why it exited (cmd.Wait's), once done is closed
}

// startChildProc starts cmd and hands each stdout line that decodes as an S
// to route, in order, on one goroutine; lines that do not decode are
// skipped. The child's stderr is this process's unless cmd sets one.
func startChildProc[S any](cmd *exec.Cmd, route func(S)) (*childProc, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start child %s: %w", cmd.Path, err)
	}
	p := &childProc{cmd: cmd, in: in, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var v S
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				continue // not a report line
			}
			route(v)
		}
		p.err = cmd.Wait() // after the last read of out, as Wait requires
	}()
	return p, nil
}

// kill stops the child and waits until it is reaped.
func (p *childProc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}
