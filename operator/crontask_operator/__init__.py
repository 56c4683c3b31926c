"""The crontask operator: CronTask custom resources reconciled into CronJobs."""
