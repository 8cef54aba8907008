package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// configFlagName is the flag naming the YAML config file.
const configFlagName = "config"

// addConfigFlag adds --config to cmd: a YAML file whose keys are cmd's flag
// names (e.g. "kafka-brokers: [127.0.0.1:9092]", "presence-grace: 5s").
func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String(configFlagName, "", "YAML file of flag values, keys = flag names (e.g. presence-grace: 5s); "+
		"precedence: command line > PARLEY_<FLAG> environment > this file > default")
}

// flagsFromEnvAndConfig applies, to every flag of cmd not given on the
// command line, first the environment (flagsFromEnv), then the YAML file
// named by --config (or PARLEY_CONFIG): flag > env > file > default.
func flagsFromEnvAndConfig(cmd *cobra.Command) error {
	if err := flagsFromEnv(cmd); err != nil {
		return err
	}
	fl := cmd.Flags().Lookup(configFlagName)
	if fl == nil || fl.Value.String() == "" {
		return nil
	}
	return flagsFromConfigFile(cmd.Flags(), fl.Value.String(), cmd.CommandPath())
}

// flagsFromConfigFile sets each flag of fs that is not Changed yet (neither
// on the command line nor from the environment) from the YAML mapping in
// path. It fails, naming the file and the key, on an unknown key, a
// duplicate key, or a value of the wrong type (flags may then be partly
// set: the caller stops). cmdPath names the command in the unknown-key
// error.
func flagsFromConfigFile(fs *pflag.FlagSet, path, cmdPath string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: nothing to apply
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: want one YAML document", path)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s: line %d: want a mapping of flag names to values", path, root.Line)
	}
	// Check every key before setting any, so a bad file changes nothing.
	type entry struct {
		fl  *pflag.Flag
		key *yaml.Node
		val *yaml.Node
	}
	seen := make(map[string]int, len(root.Content)/2)
	entries := make([]entry, 0, len(root.Content)/2)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("config file %s: line %d: keys must be flag names", path, k.Line)
		}
		if line, dup := seen[k.Value]; dup {
			return fmt.Errorf("config file %s: line %d: key %q already set on line %d", path, k.Line, k.Value, line)
		}
		seen[k.Value] = k.Line
		fl := fs.Lookup(k.Value)
		if fl == nil || k.Value == configFlagName || k.Value == "help" || fl.Hidden || fl.Deprecated != "" {
			return fmt.Errorf("config file %s: line %d: unknown key %q (not a flag of %s)", path, k.Line, k.Value, cmdPath)
		}
		entries = append(entries, entry{fl, k, v})
	}
	for _, e := range entries {
		if e.fl.Changed {
			continue // the command line or the environment wins
		}
		if err := setFromYAML(fs, e.fl, e.val); err != nil {
			return fmt.Errorf("config file %s: line %d: key %q: want %s: %w", path, e.key.Line, e.fl.Name, typeWord(e.fl), err)
		}
	}
	return nil
}

// setFromYAML sets fl from n: a list flag from a sequence of scalars (or one
// scalar, parsed as on the command line), any other flag from a scalar of
// its type.
func setFromYAML(fs *pflag.FlagSet, fl *pflag.Flag, n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return errors.New("no value")
	}
	if sv, ok := fl.Value.(pflag.SliceValue); ok && n.Kind == yaml.SequenceNode {
		items := make([]string, 0, len(n.Content))
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				return fmt.Errorf("line %d: list items must be plain values", it.Line)
			}
			items = append(items, it.Value)
		}
		// Replace, not Set: Set would split each item at commas.
		if err := sv.Replace(items); err != nil {
			return err
		}
		fl.Changed = true
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("got a %s", kindWord(n.Kind))
	}
	// Typed flags take only YAML values of their type (yaml.v3 would
	// decode yes into a bool or truncate 1.5 into an int).
	v := n.Value
	switch fl.Value.Type() {
	case "bool":
		var b bool
		if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			return fmt.Errorf("got %q", n.Value)
		}
		v = strconv.FormatBool(b)
	case "int", "int8", "int16", "int32", "int64", "count":
		var i int64
		if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			return fmt.Errorf("got %q", n.Value)
		}
		v = strconv.FormatInt(i, 10)
	case "uint", "uint8", "uint16", "uint32", "uint64":
		var u uint64
		if n.ShortTag() != "!!int" || n.Decode(&u) != nil {
			return fmt.Errorf("got %q", n.Value)
		}
		v = strconv.FormatUint(u, 10)
	case "float32", "float64":
		var x float64
		if (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&x) != nil {
			return fmt.Errorf("got %q", n.Value)
		}
		v = strconv.FormatFloat(x, 'g', -1, 64)
	}
	if err := fs.Set(fl.Name, v); err != nil {
		return fmt.Errorf("got %q", n.Value)
	}
	return nil
}

// typeWord describes the value fl expects, for errors.
func typeWord(fl *pflag.Flag) string {
	switch t := fl.Value.Type(); t {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "count":
		return "an integer"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a non-negative integer"
	case "float32", "float64":
		return "a number"
	case "duration":
		return "a duration such as 5s or 1m30s"
	case "stringSlice", "stringArray":
		return "a list of strings"
	default:
		if _, ok := fl.Value.(pflag.SliceValue); ok {
			return "a list (" + t + ")"
		}
		return "a " + t
	}
}

func kindWord(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	default:
		return "non-scalar value"
	}
}
