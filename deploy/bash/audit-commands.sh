# Append to /etc/bash.bashrc (or install as /etc/profile.d/audit-commands.sh): after every
# command, log "<user> [<shell pid>]: <command> [<exit code>]" to syslog facility local6.
# rsyslog (deploy/rsyslog/30-commands.conf) writes it to /var/log/commands.log, e.g.
#   May 17 15:26:30 a3 civis-ec2: civis-ec2 [11760]: sudo systemctl restart nginx [0]
# (logger's tag is the login name; the worker maps user.name, process.pid, process.command_line,
# process.exit_code). The original article's snippet had two typos (PROMPTCOMMAND, RETRNVAL):
# fixed here. This is a convenience record, not tamper-proof: users can unset it; auditd's
# EXECVE records are the trustworthy source.
export PROMPT_COMMAND='RETRN_VAL=$?;logger -p local6.debug "$(whoami) [$$]: $(history 1 | sed "s/^[ ]*[0-9]\+[ ]*//" ) [$RETRN_VAL]"'
