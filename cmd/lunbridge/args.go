package main

import (
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// Flags anywhere (issue 21 item 1).
//
// urfave/cli/v2 reads global flags only before the command name and a
// command's flags only before its first argument (Go's flag package stops
// there), so `lunbridge ls --chap-user alice san1` was refused and `serve
// URL --mirror URL-B` took "--mirror" for an argument. placeFlags puts
// every flag where the parser looks for it before the parser runs: global
// flags found after the command go before it, and the command's flags
// found after an argument go before the arguments, with their values. An
// argument "--" ends flags, as usual; an unknown flag stays where the
// command's flags are, so the parser refuses it with a suggestion.

// flagInfo says whether a flag takes a value.
type flagSet map[string]bool // name or alias → takes a value

func flagsOf(fs []cli.Flag) flagSet {
	set := flagSet{}
	for _, f := range fs {
		takes := true
		if d, ok := f.(cli.DocGenerationFlag); ok {
			takes = d.TakesValue()
		}
		for _, n := range f.Names() {
			set[n] = takes
		}
	}
	return set
}

// flagName returns the name of a flag token ("--name", "-n", "--name=v")
// and whether it carries its value inline; ok is false for arguments
// ("-", "--", "x", negative numbers).
func flagName(tok string) (name string, inline, ok bool) {
	if len(tok) < 2 || tok[0] != '-' || tok == "--" {
		return "", false, false
	}
	if c := tok[1]; c >= '0' && c <= '9' {
		return "", false, false // a negative number is an argument
	}
	name = strings.TrimLeft(tok, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], true, true
	}
	return name, false, true
}

// placeFlags reorders args (os.Args) as described above. It changes
// nothing for shell completion requests, nor before it has found a known
// command.
func placeFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	for _, a := range args {
		if a == "--generate-bash-completion" {
			return args
		}
	}
	global := flagsOf(app.Flags)
	help := flagsOf([]cli.Flag{cli.HelpFlag})
	// Leading global flags, then the command path.
	i := 1
	for i < len(args) {
		name, inline, ok := flagName(args[i])
		if !ok {
			break
		}
		i++
		if takes, known := global[name]; known && takes && !inline && i < len(args) {
			i++
		}
	}
	if i >= len(args) || args[i] == "--" {
		return args
	}
	lead := append([]string(nil), args[1:i]...)
	cmd := findCommand(app.Commands, args[i])
	if cmd == nil {
		return args
	}
	path := []string{args[i]}
	i++
	rest := args[i:]
	// Descend into subcommands (mirror status, ...): the first argument
	// that names one.
	for len(cmd.Subcommands) > 0 {
		j := firstArg(rest, flagsOf(cmd.Flags), global)
		if j < 0 {
			break
		}
		sub := findCommand(cmd.Subcommands, rest[j])
		if sub == nil {
			break
		}
		path = append(path, rest[j])
		rest = append(append([]string(nil), rest[:j]...), rest[j+1:]...)
		cmd = sub
	}
	own := flagsOf(cmd.Flags)
	var moved, flags, positional []string
	for k := 0; k < len(rest); k++ {
		tok := rest[k]
		if tok == "--" {
			positional = append(positional, rest[k:]...)
			break
		}
		name, inline, ok := flagName(tok)
		if !ok {
			positional = append(positional, tok)
			continue
		}
		takes, isOwn := own[name]
		if !isOwn {
			takes, isOwn = help[name]
		}
		dst := &flags
		if !isOwn {
			if t, isGlobal := global[name]; isGlobal {
				takes, dst = t, &moved
			}
		}
		*dst = append(*dst, tok)
		if takes && !inline && k+1 < len(rest) {
			k++
			*dst = append(*dst, rest[k])
		}
	}
	durations := durationFlags(app.Flags)
	for n := range durationFlags(cmd.Flags) {
		durations[n] = true
	}
	out := []string{args[0]}
	out = append(out, plainSeconds(lead, durations)...)
	out = append(out, plainSeconds(moved, durations)...)
	out = append(out, path...)
	out = append(out, plainSeconds(flags, durations)...)
	return append(out, positional...)
}

// durationFlags names the flags of fs that take a duration.
func durationFlags(fs []cli.Flag) map[string]bool {
	set := map[string]bool{}
	for _, f := range fs {
		if _, ok := f.(*cli.DurationFlag); ok {
			for _, n := range f.Names() {
				set[n] = true
			}
		}
	}
	return set
}

var plainNumber = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// plainSeconds lets a duration flag take a plain number of seconds
// ("--timeout 30"), as timeouts are written in iscsid.conf and elsewhere:
// toks holds flags with their values.
func plainSeconds(toks []string, durations map[string]bool) []string {
	out := append([]string(nil), toks...)
	for k := 0; k < len(out); k++ {
		name, inline, ok := flagName(out[k])
		if !ok || !durations[name] {
			continue
		}
		if inline {
			if i := strings.IndexByte(out[k], '='); plainNumber.MatchString(out[k][i+1:]) {
				out[k] += "s"
			}
		} else if k+1 < len(out) {
			k++
			if plainNumber.MatchString(out[k]) {
				out[k] += "s"
			}
		}
	}
	return out
}

// firstArg returns the index of the first argument in toks (skipping flags
// and their values), or -1.
func firstArg(toks []string, own, global flagSet) int {
	for k := 0; k < len(toks); k++ {
		name, inline, ok := flagName(toks[k])
		if !ok {
			if toks[k] == "--" {
				return -1
			}
			return k
		}
		takes, known := own[name]
		if !known {
			takes = global[name]
		}
		if takes && !inline {
			k++
		}
	}
	return -1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

var undefinedFlag = regexp.MustCompile(`flag provided but not defined: -+([^ ]+)`)

// suggestFlag adds "did you mean --x?" to an unknown-flag error, from the
// flags the command (and every command above it) accepts.
func suggestFlag(msg string, c *cli.Context) string {
	m := undefinedFlag.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	var names []string
	for _, ctx := range c.Lineage() {
		var fs []cli.Flag
		switch {
		case ctx.Command != nil && ctx.Command.Name != "":
			fs = ctx.Command.Flags
		case ctx.App != nil:
			fs = ctx.App.Flags
		}
		for _, f := range fs {
			names = append(names, f.Names()...)
		}
	}
	best, bestD := "", 3
	for _, n := range names {
		if len(n) < 2 {
			continue
		}
		d := editDistance(m[1], n)
		if strings.HasPrefix(n, m[1]) && len(m[1]) >= 3 {
			d = min(d, 1) // a flag typed short
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return "flag provided but not defined: --" + m[1]
	}
	return "flag provided but not defined: --" + m[1] + "; did you mean --" + best + "?"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
