package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// Man pages are generated from the command definitions, one page per
// command as git does (lunbridge.1, lunbridge-serve.1, ...): urfave/cli's
// App.ToMan renders one page without the commands' descriptions and
// examples, which are most of what a man page is for. `make man` runs the
// hidden command below; make install puts the pages in man1.

func init() {
	register("", &cli.Command{
		Name:      "man-pages",
		Usage:     "write the man pages (lunbridge.1, lunbridge-COMMAND.1) into DIR",
		UsageText: "lunbridge man-pages DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("man-pages: want one directory")
			}
			return writeManPages(c.App, c.Args().First())
		},
	})
}

func writeManPages(app *cli.App, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	date := time.Now().UTC().Format("January 2006")
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" { // reproducible builds
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			date = time.Unix(sec, 0).UTC().Format("January 2006")
		}
	}
	footer := "lunbridge " + versionInfo().Version
	pages := map[string]string{"lunbridge": appManPage(app, date, footer)}
	for _, cmd := range app.Commands {
		if cmd.Hidden || cmd.Name == "help" {
			continue
		}
		pages["lunbridge-"+cmd.Name] = commandManPage(cmd, date, footer)
	}
	for name, md := range pages {
		if err := os.WriteFile(filepath.Join(dir, name+".1"), md2man.Render([]byte(md)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func manHeader(b *strings.Builder, name, date, footer string) {
	// pandoc title block: % title section date source manual
	fmt.Fprintf(b, "%% %s 1 %q %q \"lunbridge manual\"\n\n", strings.ToUpper(name), date, footer)
}

func appManPage(app *cli.App, date, footer string) string {
	var b strings.Builder
	manHeader(&b, "lunbridge", date, footer)
	fmt.Fprintf(&b, "# NAME\n\nlunbridge - %s\n\n", manEscape(app.Usage))
	fmt.Fprintf(&b, "# SYNOPSIS\n\n**lunbridge** [*global options*] *command* [*command options*] [*arguments*...]\n\n")
	fmt.Fprintf(&b, "# DESCRIPTION\n\n%s\n", manText(app.Description))
	b.WriteString("# GLOBAL OPTIONS\n\n")
	manFlags(&b, app.VisibleFlags())
	b.WriteString("# COMMANDS\n\n")
	var see []string
	for _, cmd := range app.Commands {
		if cmd.Hidden || cmd.Name == "help" {
			continue
		}
		fmt.Fprintf(&b, "**%s**\n: %s; see **lunbridge-%s**(1).\n\n", cmd.Name, manEscape(cmd.Usage), cmd.Name)
		see = append(see, "**lunbridge-"+cmd.Name+"**(1)")
	}
	b.WriteString("# FILES\n\n")
	b.WriteString("*/etc/lunbridge/lunbridge.conf*\n: defaults for the global options (given with --config or $LUNBRIDGE\\_CONFIG).\n\n")
	b.WriteString("*/etc/lunbridge/NAME.env*\n: the URL and options of the systemd units lunbridge-serve@NAME, lunbridge-attach@NAME and lunbridge-mount@NAME.\n\n")
	b.WriteString("# SEE ALSO\n\n" + strings.Join(see, ", ") + ", **nbdinfo**(1), **iscsiadm**(8)\n")
	return b.String()
}

func commandManPage(cmd *cli.Command, date, footer string) string {
	var b strings.Builder
	name := "lunbridge-" + cmd.Name
	manHeader(&b, name, date, footer)
	fmt.Fprintf(&b, "# NAME\n\n%s - %s\n\n", name, manEscape(cmd.Usage))
	commandManBody(&b, cmd, "lunbridge "+cmd.Name, "#")
	b.WriteString("# SEE ALSO\n\n**lunbridge**(1)\n")
	return b.String()
}

func commandManBody(b *strings.Builder, cmd *cli.Command, full, level string) {
	usage := cmd.UsageText
	if usage == "" {
		usage = full + " [options] " + cmd.ArgsUsage
	}
	fmt.Fprintf(b, "%s SYNOPSIS\n\n```\n%s\n```\n\n", level, strings.TrimSpace(usage))
	if cmd.Description != "" {
		fmt.Fprintf(b, "%s DESCRIPTION\n\n%s\n", level, manText(cmd.Description))
	}
	if fl := cmd.VisibleFlags(); len(fl) > 0 {
		fmt.Fprintf(b, "%s OPTIONS\n\n", level)
		manFlags(b, fl)
	}
	for _, sub := range cmd.Subcommands {
		if sub.Hidden || sub.Name == "help" {
			continue
		}
		fmt.Fprintf(b, "# %s %s\n\n%s.\n\n", strings.ToUpper(cmd.Name), strings.ToUpper(sub.Name), manEscape(sub.Usage))
		commandManBody(b, sub, full+" "+sub.Name, "##")
	}
}

// manFlags renders flags as a definition list, from urfave's own help line
// ("--listen value, -l value\tusage (default: ...)").
func manFlags(b *strings.Builder, flags []cli.Flag) {
	for _, f := range flags {
		if f.Names()[0] == "help" {
			continue
		}
		term, usage, _ := strings.Cut(strings.TrimSpace(fmt.Sprint(f)), "\t")
		fmt.Fprintf(b, "**%s**\n: %s\n\n", manEscape(term), manEscape(usage))
	}
}

// manText turns a help description into markdown: lines indented by three
// or more spaces (examples, URL forms) become literal blocks, the rest
// paragraphs.
func manText(s string) string {
	var b strings.Builder
	lines := strings.Split(s, "\n")
	inCode := false
	for _, l := range lines {
		code := strings.HasPrefix(l, "   ")
		switch {
		case code && !inCode:
			b.WriteString("\n```\n")
			inCode = true
		case !code && inCode:
			b.WriteString("```\n\n")
			inCode = false
		}
		if code {
			b.WriteString(strings.TrimPrefix(l, "   ") + "\n")
			continue
		}
		if strings.TrimSpace(l) == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(manEscape(l) + "\n")
	}
	if inCode {
		b.WriteString("```\n")
	}
	b.WriteString("\n")
	return b.String()
}

// manEscape escapes markdown's special characters in running text.
func manEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "<", `\<`, ">", `\>`, "#", `\#`, "|", `\|`)
	return r.Replace(s)
}
