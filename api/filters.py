"""Filters of the API's lists that plain field filters cannot say (an empty label is a value, not "no filter")."""

import django_filters

from datasets.models import DataSetItem


class DataSetItemFilter(django_filters.FilterSet):
    """?dataset=, ?label= (a label), ?labelled=true|false (false: the unlabelled images)."""

    labelled = django_filters.BooleanFilter(method="filter_labelled", label="Has a label (false: the unlabelled ones)")

    class Meta:
        model = DataSetItem
        fields = ["dataset", "label"]

    def filter_labelled(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.exclude(label="") if value else queryset.filter(label="")
