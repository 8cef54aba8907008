package rollout

import (
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// dialSeries returns, for each endpoint, the dials it took in each second of [from, to)
// (index = seconds since from), for plotting.
func (d *serviceDialer) dialSeries(from, to time.Time) map[string][]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := int(to.Sub(from)/time.Second) + 1
	out := map[string][]int{}
	for _, r := range d.log {
		if r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		s := out[r.target]
		if s == nil {
			s = make([]int, n)
			out[r.target] = s
		}
		s[int(r.at.Sub(from)/time.Second)]++
	}
	return out
}

// plotRollout writes a PNG to path: on the left the clients by number of reconnects during
// the rollout (hist: 0x, 1x, 2x, >2x), on the right each gateway endpoint's dials per second
// (series from dialSeries). The issue asks for the reconnect histogram as a plot in
// docs/operator.md; gonum/plot draws it.
func plotRollout(path string, hist [4]int, clients int, series map[string][]int) error {
	bars := plot.New()
	bars.Title.Text = fmt.Sprintf("reconnects per client (%d clients)", clients)
	bars.Y.Label.Text = "clients"
	vals := plotter.Values{float64(hist[0]), float64(hist[1]), float64(hist[2]), float64(hist[3])}
	bc, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return fmt.Errorf("bar chart: %w", err)
	}
	bc.Color = color.RGBA{R: 60, G: 110, B: 180, A: 255}
	bars.Add(bc)
	bars.NominalX("0x", "1x", "2x", ">2x")

	rates := plot.New()
	rates.Title.Text = "dials per second, by gateway endpoint"
	rates.X.Label.Text = "seconds since the image change"
	rates.Y.Label.Text = "dials/s"
	rates.Legend.Top = true
	names := make([]string, 0, len(series))
	for name := range series {
		names = append(names, name)
	}
	sort.Strings(names)
	palette := []color.RGBA{{200, 60, 60, 255}, {60, 150, 60, 255}, {60, 90, 200, 255}, {200, 140, 20, 255}, {140, 60, 170, 255}, {30, 160, 170, 255}}
	for i, name := range names {
		xys := make(plotter.XYs, len(series[name]))
		for s, c := range series[name] {
			xys[s] = plotter.XY{X: float64(s), Y: float64(c)}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("line of %s: %w", name, err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		rates.Add(l)
		rates.Legend.Add(name, l)
	}

	img := vgimg.New(vg.Points(960), vg.Points(360))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(12), PadY: vg.Points(8), PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8)}
	cs := plot.Align([][]*plot.Plot{{bars, rates}}, tiles, dc)
	bars.Draw(cs[0][0])
	rates.Draw(cs[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// TestPlotRollout: the plot is a readable PNG of the asked size, whatever the series.
func TestPlotRollout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rollout.png")
	series := map[string][]int{"10.0.0.1:8080": {0, 5, 40, 0}, "10.0.0.2:8080": {0, 0, 3, 60}}
	if err := plotRollout(path, [4]int{0, 1349, 651, 0}, 2000, series); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 900 || b.Dy() < 300 {
		t.Fatalf("image %v, want about 960x360 points", b)
	}
	if err := plotRollout(filepath.Join(t.TempDir(), "empty.png"), [4]int{}, 0, nil); err != nil {
		t.Fatalf("plot without dials: %v", err)
	}
}
