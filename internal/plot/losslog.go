package plot

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ncsn/ncsn/internal/atomicfile"
)

// LossLog appends one line per committed step to a CSV file
// (step,loss,loss_level_0,…): the record a loss curve is drawn from. Steps in the file
// only go up: a resumed run's first step drops the rows from that step on, which the
// run before it wrote past its last checkpoint, so no step is recorded twice.
type LossLog struct {
	path string
	f    *os.File
	w    *bufio.Writer
	last int64 // the highest step in the file
}

// OpenLossLog opens (or creates) the log at path for appending.
func OpenLossLog(path string, levels int) (*LossLog, error) {
	l := &LossLog{path: path}
	rows, err := readRows(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("plot: loss log: %w", err)
	}
	for _, r := range rows {
		l.last = max(l.last, r.step)
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	if st, err := l.f.Stat(); err == nil && st.Size() == 0 {
		l.w.WriteString("step,loss")
		for i := 0; i < levels; i++ {
			fmt.Fprintf(l.w, ",loss_level_%d", i)
		}
		l.w.WriteByte('\n')
	}
	return l, nil
}

func (l *LossLog) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("plot: loss log: %w", err)
	}
	l.f, l.w = f, bufio.NewWriter(f)
	return nil
}

type row struct {
	step int64
	line string
}

// readRows reads the header (step 0) and every whole row of a loss log.
func readRows(path string) ([]row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []row
	lines := strings.Split(string(b), "\n")
	for i, line := range lines[:len(lines)-1] { // the last is empty or cut short by a crash
		if i == 0 && strings.HasPrefix(line, "step,") {
			rows = append(rows, row{0, line})
			continue
		}
		fs := strings.SplitN(line, ",", 3)
		if len(fs) < 2 {
			continue
		}
		if s, err := strconv.ParseInt(fs[0], 10, 64); err == nil && s >= 1 {
			rows = append(rows, row{s, line})
		}
	}
	return rows, nil
}

// Add records a step. Lines reach the file on Flush or Close.
func (l *LossLog) Add(step int64, loss float64, perLevel []float64) error {
	if step <= l.last {
		if err := l.truncate(step); err != nil {
			return err
		}
	}
	l.last = step
	l.w.WriteString(strconv.FormatInt(step, 10))
	l.w.WriteByte(',')
	l.w.WriteString(strconv.FormatFloat(loss, 'g', 6, 64))
	for _, v := range perLevel {
		l.w.WriteByte(',')
		l.w.WriteString(strconv.FormatFloat(v, 'g', 6, 64))
	}
	l.w.WriteByte('\n')
	return nil
}

// truncate rewrites the file without the rows of steps from on.
func (l *LossLog) truncate(from int64) error {
	if err := l.Close(); err != nil {
		return err
	}
	rows, err := readRows(l.path)
	if err != nil {
		return fmt.Errorf("plot: loss log: %w", err)
	}
	var b strings.Builder
	for _, r := range rows {
		if r.step < from {
			b.WriteString(r.line)
			b.WriteByte('\n')
		}
	}
	if err := atomicfile.WriteFile(l.path, []byte(b.String()), 0o666); err != nil {
		return fmt.Errorf("plot: loss log: %w", err)
	}
	return l.open()
}

// Flush writes buffered lines to the file.
func (l *LossLog) Flush() error { return l.w.Flush() }

// Close flushes and closes the file. It is idempotent.
func (l *LossLog) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.w.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// ReadLossLog returns the loss of steps 1…max found in the log at path, the
// last line of a step winning (0 where a step is missing).
func ReadLossLog(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plot: loss log: %w", err)
	}
	defer f.Close()
	byStep := map[int64]float64{}
	var last int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 && strings.HasPrefix(line, "step,") {
			continue
		}
		fs := strings.SplitN(line, ",", 3)
		if len(fs) < 2 {
			continue // a line cut short by a crash
		}
		s, err1 := strconv.ParseInt(fs[0], 10, 64)
		v, err2 := strconv.ParseFloat(fs[1], 64)
		if err1 != nil || err2 != nil || s < 1 || s > 1<<40 {
			continue
		}
		byStep[s] = v
		last = max(last, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("plot: loss log %s: %w", path, err)
	}
	if last > 1<<26 {
		return nil, fmt.Errorf("plot: loss log %s: step %d is too large to plot", path, last)
	}
	out := make([]float64, last)
	for s, v := range byStep {
		out[s-1] = v
	}
	return out, nil
}

// LossCurveFile draws the loss log at csvPath as a PNG at pngPath.
func LossCurveFile(csvPath, pngPath, title string) error {
	loss, err := ReadLossLog(csvPath)
	if err != nil {
		return err
	}
	img, err := LossCurve(loss, title)
	if err != nil {
		return err
	}
	return WritePNG(pngPath, img)
}

// Plot flushes the log and draws it as a PNG at pngPath, so the curve can be
// watched while the run goes on.
func (l *LossLog) Plot(pngPath, title string) error {
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("plot: loss log: %w", err)
	}
	return LossCurveFile(l.path, pngPath, title)
}
