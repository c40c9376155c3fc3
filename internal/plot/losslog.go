package plot

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// LossLog appends one line per committed step to a CSV file
// (step,loss,loss_level_0,…): the record a loss curve is drawn from. A
// resumed run appends again from its checkpoint's step; readers keep the
// last line of each step.
type LossLog struct {
	f *os.File
	w *bufio.Writer
}

// OpenLossLog opens (or creates) the log at path for appending.
func OpenLossLog(path string, levels int) (*LossLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("plot: loss log: %w", err)
	}
	l := &LossLog{f: f, w: bufio.NewWriter(f)}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		l.w.WriteString("step,loss")
		for i := 0; i < levels; i++ {
			fmt.Fprintf(l.w, ",loss_level_%d", i)
		}
		l.w.WriteByte('\n')
	}
	return l, nil
}

// Add records a step. Lines reach the file on Flush or Close.
func (l *LossLog) Add(step int64, loss float64, perLevel []float64) {
	l.w.WriteString(strconv.FormatInt(step, 10))
	l.w.WriteByte(',')
	l.w.WriteString(strconv.FormatFloat(loss, 'g', 6, 64))
	for _, v := range perLevel {
		l.w.WriteByte(',')
		l.w.WriteString(strconv.FormatFloat(v, 'g', 6, 64))
	}
	l.w.WriteByte('\n')
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
